"""The deployment files agree with each other and with the CLI (no Docker engine here)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from store.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
ANY_ADDRESS = ".".join("0" * 4)  # what containers listen on


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _store_args(argv: list[str]) -> Any:
    assert argv[0] == "store", argv
    return build_parser().parse_args(argv[1:])


def test_services_volumes_and_dependencies_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "registry-config", "registry", "store"}
    declared = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == declared
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["registry"]["image"].startswith("registry:2")
    deps = services["store"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert services["registry"]["depends_on"]["registry-config"]["condition"] == (
        "service_completed_successfully"
    )
    for one_shot in ("migrate", "registry-config"):
        assert services[one_shot]["restart"] == "no"


def test_one_shot_commands_are_store_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = _store_args(_argv(services["migrate"]["command"]))
    assert (migrate.command, migrate.db_command) == ("db", "upgrade")
    config = _store_args(_argv(services["registry-config"]["command"]))
    assert (config.command, config.registry_command) == ("registry", "config")
    assert str(config.out) == "/var/lib/store/registry"


def test_the_registry_reads_what_registry_config_writes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = _store_args(_argv(services["registry-config"]["command"]))
    writer = {m.split(":")[0]: m.split(":")[1] for m in services["registry-config"]["volumes"]}
    reader = {m.split(":")[0]: m.split(":")[1] for m in services["registry"]["volumes"]}
    # Same volume at the same path: config.yml names bundle.pem by its absolute path.
    assert writer["registry-config"] == reader["registry-config"] == str(config.out)
    assert _argv(services["registry"]["command"]) == [f"{config.out}/config.yml"]
    # Blobs go where the registry's data volume is mounted.
    assert reader["registry-data"] == str(config.storage_dir)
    # It listens on every interface, on the port compose publishes.
    host, _, port = config.addr.rpartition(":")
    assert host == ANY_ADDRESS
    assert services["registry"]["ports"] == [f"{port}:{port}"]


def test_addresses_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["store"]["environment"]
    store_port = services["store"]["ports"][0].split(":")[1]
    # The registry container reaches the store by its service name, on the port it serves.
    assert env["STORE_REGISTRY_NOTIFY_URL"] == f"http://store:{store_port}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"--port {store_port}" in _instruction(dockerfile, "CMD")
    # Clients reach the realm and the registry on the published ports.
    assert env["STORE_PUBLIC_URL"].endswith(f"localhost:{store_port}}}")
    registry_port = services["registry"]["ports"][0].split(":")[0]
    assert env["STORE_REGISTRY_URL"].endswith(f"localhost:{registry_port}}}")
    # The database URL names the postgres service and its credentials.
    pg = services["postgres"]["environment"]
    assert re.fullmatch(
        rf"postgresql://{pg['POSTGRES_USER']}:\$\{{POSTGRES_PASSWORD:\?[^}}]*\}}@postgres:5432/{pg['POSTGRES_DB']}",
        env["STORE_DATABASE_URL"],
    ), env["STORE_DATABASE_URL"]
    # Secrets are required from .env, never defaulted.
    assert env["STORE_SECRET_KEY"].startswith("${STORE_SECRET_KEY:?")
    for key in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        assert env[key] == f"${{{key}:-}}"
    # Every store service sees the same settings.
    for name in ("migrate", "registry-config"):
        assert services[name]["environment"].items() <= env.items()


def _instruction(dockerfile: str, name: str) -> str:
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    [line] = [ln for ln in joined.splitlines() if ln.startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def test_the_dockerfile_runs_existing_console_scripts() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER store$", dockerfile, re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["store"] == "store.cli.main:main"
    cmd = json.loads(_instruction(dockerfile, "CMD"))
    assert cmd[:2] == ["sh", "-c"]
    argv = shlex.split(cmd[2].replace('"${STORE_WORKERS:-2}"', "2"))
    assert argv[0] == "exec"
    args = _store_args(argv[1:])
    assert (args.command, args.host, args.port, args.workers) == ("serve", ANY_ADDRESS, 8000, 2)
    healthcheck = _instruction(dockerfile, "HEALTHCHECK")
    assert "http://127.0.0.1:8000/healthz" in healthcheck


def _stages(dockerfile: str) -> list[list[str]]:
    """The instructions of each stage, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line.strip() and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_the_image_installs_a_wheel_not_the_source_tree() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    build, final = _stages(dockerfile)
    assert build[0] == "FROM python:3.11-slim AS build"
    assert final[0] == "FROM python:3.11-slim"
    # The build stage makes the wheel from the sources it copies, templates and migrations
    # included (they become package data).
    copied = {src for line in build if line.startswith("COPY ") for src in line.split()[1:-1]}
    assert {"pyproject.toml", "README.md", "store", "templates", "migrations"} <= copied
    [wheel] = [line for line in build if line.startswith("RUN ") and "pip wheel" in line]
    assert "--no-deps" in wheel and "/wheels" in wheel
    # The final stage copies no source, only the wheel (and pyproject.toml for the
    # dependency layer), and installs it as a regular package.
    copies = [line for line in final if line.startswith("COPY ")]
    assert copies == [
        "COPY pyproject.toml /tmp/pyproject.toml",
        "COPY --from=build /wheels /tmp/wheels",
    ]
    installs = [line for line in final if "pip install" in line]
    assert len(installs) == 2, installs
    assert "requirements.txt" in installs[0]
    assert "/tmp/wheels/store-" in installs[1] and "store --help" in installs[1]
    assert not re.search(r"pip install[^&]* (-e|--editable)\b", dockerfile)
    assert "editable" not in dockerfile
    # Dependencies come before the application: a code change does not rebuild them.
    assert final.index(copies[0]) < final.index(installs[0]) < final.index(copies[1])
    assert final.index("USER store") > final.index(installs[1])


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".git", "store-data", "tests"):
        assert entry in ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        src
        for stage in _stages(dockerfile)
        for line in stage
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    }
    assert {"store", "templates", "migrations", "pyproject.toml"} <= copied
    for needed in copied:
        assert needed not in ignored


def test_systemd_units_run_store_commands() -> None:
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {
        "store.service",
        "store-migrate.service",
        "store-registry.service",
    }
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit.read_text())
        exec_start = parser["Service"]["ExecStart"]
        argv = shlex.split(exec_start)
        if unit.name == "store-registry.service":
            assert argv == ["/usr/bin/docker-registry", "serve", "/etc/store-registry/config.yml"]
            continue
        assert argv[0] == "/opt/store/.venv/bin/store"
        args = build_parser().parse_args(argv[1:])
        assert args.command in ("serve", "db")
        assert parser["Service"]["User"] == "store"


def test_the_example_env_names_every_required_variable(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, re.M))
    assert required == {"STORE_SECRET_KEY", "POSTGRES_PASSWORD"}
    assert required <= defined
