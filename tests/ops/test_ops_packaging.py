"""A regular (non-editable) wheel carries the templates and the migrations and runs away from
the checkout: built as the Dockerfile builds it, installed into a fresh virtualenv."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

import store
from tests.e2e.registry_env import clean_env, free_port, start, wait_http

ROOT = store.PROJECT_DIR
# What pyproject.toml maps into the package, source directory → directory in the wheel.
PACKAGE_DATA = {"templates": "store/_templates", "migrations": "store/_migrations"}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _tracked_files(directory: Path) -> set[str]:
    """The files of a source directory, as a build sees them (no byte code)."""
    return {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def test_the_checkout_runs_on_its_own_templates_and_migrations() -> None:
    # Tests run from the checkout (an editable install): its copies, never a packaged one.
    assert store.PACKAGE_DIR == ROOT / "store"
    assert store.TEMPLATES_DIR == ROOT / "templates"
    assert store.MIGRATIONS_DIR == ROOT / "migrations"
    assert store.STATIC_DIR == ROOT / "store" / "web" / "static"
    for packaged in PACKAGE_DATA.values():
        assert not (ROOT / packaged).exists(), f"{packaged} would shadow the checkout's copy"


def test_every_package_of_the_source_tree_is_listed() -> None:
    config = _pyproject()
    packages = set(config["packages"])
    in_tree = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "store").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert in_tree - packages == set(), "add these to [tool.setuptools] packages"
    assert packages - in_tree == {
        "store._templates",
        "store._migrations",
        "store._migrations.versions",
    }
    package_dir = config["package-dir"]
    assert {v: k.replace(".", "/") for k, v in package_dir.items()} == PACKAGE_DATA


def _dockerfile_build_sources() -> list[tuple[list[str], str]]:
    """The COPY instructions of the Dockerfile's build stage: (sources, destination)."""
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    assert len(stages) == 3 and stages[1].startswith("${BASE} AS build"), stages[:2]
    copies = []
    for line in stages[1].splitlines():
        if line.startswith("COPY "):
            *sources, destination = shlex.split(line)[1:]
            copies.append((sources, destination))
    return copies


def _build_context(target: Path) -> None:
    """What the build stage copies from the checkout (without byte code, as .dockerignore)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for sources, destination in _dockerfile_build_sources():
        for source in sources:
            dest = target / destination
            if destination.endswith("/"):
                dest = dest / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, dest, ignore=ignore)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, dest)


def _run(argv: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.e2e
@pytest.mark.slow
def test_a_wheel_installed_elsewhere_migrates_and_serves(tmp_path: Path) -> None:
    env = clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)

    # Build: the Dockerfile's build stage, offline with the installed setuptools.
    source, dist = tmp_path / "src", tmp_path / "dist"
    _build_context(source)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        env=env,
        cwd=tmp_path,
    )
    [wheel] = dist.glob("store-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for directory, packaged in PACKAGE_DATA.items():
        expected = {f"{packaged}/{f}" for f in _tracked_files(ROOT / directory)}
        assert expected, directory
        assert expected <= names, sorted(expected - names)
    assert "store/_templates/base.html" in names
    assert {"store/_migrations/env.py", "store/_migrations/script.py.mako"} <= names
    # Everything of the package itself too: modules, static files, any other data.
    in_package = {f"store/{f}" for f in _tracked_files(ROOT / "store")}
    assert in_package <= names, sorted(in_package - names)
    assert not {n for n in names if n.startswith(("templates/", "migrations/"))}

    # Install into a fresh virtualenv with its dependencies at the locked versions (as the
    # Dockerfile does), never this environment's packages or the editable checkout.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=tmp_path)
    bin_dir = venv / "bin"
    _run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--constraint",
            str(ROOT / "constraints.txt"),
            str(wheel),
        ],
        env=env,
        cwd=tmp_path,
    )
    shown_packages = _run([str(bin_dir / "python"), "-m", "pip", "list"], env=env, cwd=tmp_path)
    assert "pytest" not in shown_packages.stdout  # only the runtime dependencies

    # Run it from elsewhere, on a fresh data directory.
    work = tmp_path / "work"
    work.mkdir()
    data_dir = work / "data"
    env["STORE_DATA_DIR"] = str(data_dir)
    shown = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import store; print(store.PACKAGE_DIR); print(store.TEMPLATES_DIR); "
            "print(store.MIGRATIONS_DIR); print(store.STATIC_DIR)",
        ],
        env=env,
        cwd=work,
    ).stdout.splitlines()
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    package_dir = site_packages.resolve() / "store"
    assert [Path(p) for p in shown] == [
        package_dir,
        package_dir / "_templates",
        package_dir / "_migrations",
        package_dir / "web" / "static",
    ]

    store_bin = str(bin_dir / "store")
    upgraded = _run([store_bin, "db", "upgrade"], env=env, cwd=work)
    assert "Upgraded" in upgraded.stdout, upgraded.stdout
    _run([store_bin, "db", "check"], env=env, cwd=work)
    assert (data_dir / "store.db").is_file()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        "store",
        [store_bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
        env={**env, "STORE_PUBLIC_URL": url},
        cwd=work,
        logs=tmp_path,
    )
    try:
        wait_http(f"{url}/healthz", timeout=30, proc=server.proc)
        with httpx.Client(base_url=url, timeout=10) as client:
            home = client.get("/")
            assert home.status_code == 200, server.log()
            assert home.headers["content-type"].startswith("text/html")
            # base.html and a page template: the installed templates were found.
            assert '<link rel="stylesheet" href="/static/store.css' in home.text
            assert "</html>" in home.text
            assert client.get("/healthz").json() == {"status": "ok"}
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready"
            for asset in ("/static/store.css", "/billing/static/checkout.js"):
                assert client.get(asset).status_code == 200, asset
    finally:
        server.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it.
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete" in server.log()
    assert "Traceback" not in server.log()
