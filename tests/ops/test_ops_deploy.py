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
from tests import deploy_files

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
    assert _image_serve().port == int(store_port)
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


def _image_env() -> dict[str, str]:
    return deploy_files.image_env(deploy_files.stages()[-1])


def _expand(word: str, env: dict[str, str]) -> str:
    """``"${NAME:-default}"`` as sh expands it in the image's CMD."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], word)


def _image_serve(env: dict[str, str] | None = None) -> Any:
    """The image's CMD parsed by the store's own parser, with the image's ENV (and ``env``)."""
    env = {**_image_env(), **(env or {})}
    cmd = deploy_files.image_cmd()
    assert cmd[:2] == ["sh", "-c"]
    argv = [_expand(word, env) for word in shlex.split(cmd[2])]
    # exec: the store replaces the shell and gets the engine's SIGTERM itself.
    assert argv[0] == "exec"
    return _store_args(argv[1:])


def test_the_dockerfile_runs_existing_console_scripts() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#")
    header, build, final = deploy_files.stages()
    # The base is a build argument; the default is the official image.
    assert header == ["ARG BASE=python:3.11-slim"]
    assert build[0] == "FROM ${BASE} AS build"
    assert final[0] == "FROM ${BASE}"
    assert re.search(r"^USER store$", dockerfile, re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["store"] == "store.cli.main:main"
    args = _image_serve()
    assert (args.command, args.host, args.port, args.workers) == ("serve", ANY_ADDRESS, 8000, 2)
    # STORE_HOST, STORE_PORT and STORE_WORKERS reach the command line.
    args = _image_serve({"STORE_HOST": "127.0.0.1", "STORE_PORT": "8123", "STORE_WORKERS": "3"})
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 8123, 3)
    assert deploy_files.instruction(final, "EXPOSE") == "8000"
    # The health check asks the port the server listens on, with the virtualenv's python
    # (Debian's python3 has no `python`; the virtualenv has both).
    healthcheck = deploy_files.instruction(final, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"]
    assert "'http://127.0.0.1:' + os.environ.get('STORE_PORT', '8000') + '/healthz'" in probe[2]
    assert _image_env()["PATH"].startswith("/opt/venv/bin:")


def test_the_image_installs_a_wheel_not_the_source_tree() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    _, build, final = deploy_files.stages()
    # The build stage makes the wheel from the sources it copies, templates and migrations
    # included (they become package data).
    copied = {src for line in build if line.startswith("COPY ") for src in line.split()[1:-1]}
    assert {"pyproject.toml", "README.md", "store", "templates", "migrations"} <= copied
    assert "constraints.txt" in copied
    [wheel] = [line for line in build if line.startswith("RUN ") and "pip wheel" in line]
    assert "--no-deps" in wheel and "--wheel-dir dist" in wheel
    # The build backend too is held to the lock.
    assert "PIP_CONSTRAINT=/src/constraints.txt" in wheel
    # Dependencies: the lock's versions, into /opt/venv, before any source is copied (a code
    # change does not rebuild them); then the wheel without dependencies.
    [deps] = [line for line in build if "--requirement requirements.txt" in line]
    assert "python3 -m venv /opt/venv" in deps
    assert "/opt/venv/bin/pip install --constraint constraints.txt" in deps
    source_copies = [
        i for i, line in enumerate(build) if line.startswith("COPY ") and "store" in line.split()
    ]
    assert build.index(deps) < min(source_copies)
    assert "/opt/venv/bin/pip install --no-deps dist/store-*.whl" in wheel
    assert "/opt/venv/bin/store --version" in wheel
    # pip and setuptools serve the build only.
    assert wheel.endswith("/opt/venv/bin/pip uninstall --quiet --yes pip setuptools")
    assert not re.search(r"pip install[^&]* (-e|--editable)\b", dockerfile)
    assert "editable" not in dockerfile
    # The final stage copies only the virtualenv: no source, no wheel, no pip downloads.
    copies = [line for line in final if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]
    assert not [line for line in final if "pip " in line]
    assert final.index("USER store") > final.index(copies[0])


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".git", "store-data", "tests"):
        assert entry in ignored
    copied = {
        src
        for stage in deploy_files.stages()
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
        "store-reconcile.service",
        "store-mail-notices.service",
    }
    timers = {t.name for t in (ROOT / "deploy" / "systemd").glob("*.timer")}
    assert timers == {"store-reconcile.timer", "store-mail-notices.timer"}
    for timer in timers:
        assert (ROOT / "deploy" / "systemd" / timer.replace(".timer", ".service")).exists()
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit.read_text())
        # every ExecStart line (a oneshot unit may run several commands in turn)
        lines = re.findall(r"^ExecStart=(.+)$", unit.read_text(), re.M)
        assert lines
        if unit.name == "store-registry.service":
            assert shlex.split(lines[0]) == [
                "/usr/bin/docker-registry", "serve", "/etc/store-registry/config.yml",
            ]  # fmt: skip
            continue
        for exec_start in lines:
            argv = shlex.split(exec_start)
            assert argv[0] == "/opt/store/.venv/bin/store"
            args = build_parser().parse_args(argv[1:])
            assert args.command in ("serve", "db", "billing", "mail")
        assert parser["Service"]["User"] == "store"
    notices = (ROOT / "deploy" / "systemd" / "store-mail-notices.service").read_text()
    assert "store mail reminders" in notices and "store mail digests" in notices


def test_the_example_env_names_every_required_variable(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, re.M))
    assert required == {"STORE_SECRET_KEY", "POSTGRES_PASSWORD"}
    assert required <= defined


# --- compose, the image and the systemd units agree ---------------------------------------

# Variables the image itself reads (its CMD), not settings of the store.
IMAGE_VARIABLES = {"STORE_HOST", "STORE_PORT", "STORE_WORKERS"}


def _known_settings() -> set[str]:
    """Every environment variable the store reads as a setting."""
    from store.billing.config import BillingSettings
    from store.config import Settings

    names = {f"STORE_{name.upper()}" for name in Settings.model_fields}
    for name, field in BillingSettings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None) or [name]
        names |= {str(a).upper() for a in aliases}
    return names


def _example_variables() -> dict[str, str]:
    """The example .env, its blanks filled as an operator would (each a generated secret)."""
    return deploy_files.example_variables()


def test_compose_image_and_units_serve_on_one_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published, container = services["store"]["ports"][0].split(":")
    image = _image_serve()
    unit = shlex.split(deploy_files.unit("store.service")["Service"]["ExecStart"])
    host_args = build_parser().parse_args(unit[1:])
    assert image.port == host_args.port == int(container) == int(published) == 8000
    # In a container: every interface; on a host: loopback, behind the proxy.
    assert (image.host, host_args.host) == (ANY_ADDRESS, "127.0.0.1")
    # The store service runs the image's CMD (no command of its own) with its workers.
    assert "command" not in services["store"] and "entrypoint" not in services["store"]
    assert services["store"]["environment"]["STORE_WORKERS"] == "${STORE_WORKERS:-2}"
    assert _image_env()["STORE_WORKERS"] == "2"


def test_compose_and_units_run_the_same_one_shot_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    store_bin = "/opt/store/.venv/bin/store"
    migrate_unit = shlex.split(deploy_files.unit("store-migrate.service")["Service"]["ExecStart"])
    assert migrate_unit[0] == store_bin
    assert migrate_unit[1:] == _argv(services["migrate"]["command"])[1:] == ["db", "upgrade"]
    # store.service requires the migration; compose's store waits for it.
    host = deploy_files.unit("store.service")["Unit"]
    assert "store-migrate.service" in host["Requires"].split()
    assert "store-migrate.service" in host["After"].split()
    # The registry config: the same command, each registry reading the file where it is
    # written, blobs where each registry keeps them.
    in_compose = _store_args(_argv(services["registry-config"]["command"]))
    on_host = _store_args(
        ["store", *deploy_files.unit_comment_command("store-registry.service", store_bin)[1:]]
    )
    assert (in_compose.command, in_compose.registry_command) == ("registry", "config")
    assert (on_host.command, on_host.registry_command) == ("registry", "config")
    registry_unit = deploy_files.unit("store-registry.service")["Service"]
    assert shlex.split(registry_unit["ExecStart"])[-1] == f"{on_host.out}/config.yml"
    assert str(on_host.storage_dir) in registry_unit["ReadWritePaths"].split()
    # Both listen on the registry port clients use; on a host only on loopback.
    assert in_compose.addr.rpartition(":")[2] == on_host.addr.rpartition(":")[2] == "5000"
    assert on_host.addr.rpartition(":")[0] == "127.0.0.1"


def test_compose_volumes_exist_in_the_image_for_the_store_user(compose: dict[str, Any]) -> None:
    _, _, final = deploy_files.stages()
    [setup] = [line for line in final if line.startswith("RUN ") and "useradd" in line]
    home = re.search(r"--home-dir (\S+)", setup)
    assert home and home[1] == deploy_files.instruction(final, "WORKDIR") == "/var/lib/store"
    assert re.search(r"useradd --system --uid 10001 .*--shell /usr/sbin/nologin store ", setup)
    # A fresh named volume takes the ownership of the image's directory: the ones the store
    # writes into exist and belong to the store user.
    made = set(re.search(r"mkdir -p ([^&]+)", setup)[1].split())  # type: ignore[index]
    assert "chown -R store:store /var/lib/store" in setup
    store_mounts = {
        mount.split(":")[1]
        for name in ("store", "migrate", "registry-config")
        for mount in compose["services"][name].get("volumes", [])
    }
    assert store_mounts == {"/var/lib/store/registry"}
    assert store_mounts <= made
    assert _image_env()["STORE_DATA_DIR"] in made
    # systemd: the same user, home and working directory; it writes only there.
    for name in ("store.service", "store-migrate.service"):
        service = deploy_files.unit(name)["Service"]
        assert (service["User"], service["Group"]) == ("store", "store")
        assert service["WorkingDirectory"] == service["ReadWritePaths"] == "/var/lib/store"
        assert service["EnvironmentFile"] == "/etc/store/store.env"


def test_compose_settings_are_settings_and_start_in_production(compose: dict[str, Any]) -> None:
    from store.config import Settings
    from store.observability.config_check import STRIPE_KEYS, check

    known = _known_settings()
    for name in ("store", "migrate", "registry-config"):
        unknown = {
            key
            for key in compose["services"][name]["environment"]
            if key.startswith(("STORE_", "STRIPE_")) and key not in known | IMAGE_VARIABLES
        }
        assert not unknown, f"{name} sets variables the store does not read: {unknown}"
    image_unknown = {
        key for key in _image_env() if key.startswith("STORE_") and key not in known
    } - IMAGE_VARIABLES
    assert not image_unknown
    example = deploy_files.read_env_file(deploy_files.COMPOSE_ENV_EXAMPLE)
    assert set(example) - {"POSTGRES_PASSWORD"} <= known | IMAGE_VARIABLES
    # With the example .env (secrets filled in), compose's settings pass the production
    # checks the store runs at start: nothing production requires is missing from compose.
    env = deploy_files.compose_environment("store", _example_variables())
    assert env["STORE_ENVIRONMENT"] == "production"
    store_env = {k[len("STORE_") :].lower(): v for k, v in env.items() if k.startswith("STORE_")}
    settings = Settings.model_validate(
        {k: v for k, v in store_env.items() if k in Settings.model_fields}
    )
    stripe = {key: env[key] or None for key in STRIPE_KEYS}
    report = check(settings, stripe)
    assert report.problems == []
    # A required secret left blank stops Compose itself, with its message.
    blank = {**_example_variables(), "STORE_SECRET_KEY": ""}
    with pytest.raises(KeyError, match="STORE_SECRET_KEY"):
        deploy_files.compose_environment("store", blank)


def test_the_haproxy_configuration_is_valid_as_shipped_and_as_the_bench_runs_it(
    tmp_path: Path,
) -> None:
    import shutil
    import subprocess

    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed (bench/load.py --hosts installs it)")
    from bench.load import HAPROXY_CFG, haproxy_config

    shipped = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True)
    assert shipped.returncode == 0, shipped.stderr.decode()
    local = tmp_path / "haproxy.cfg"
    local.write_text(haproxy_config(18080, [18081, 18082]))
    text = local.read_text()
    assert "bind 127.0.0.1:18080" in text
    assert "server store1 127.0.0.1:18081 check" in text
    assert "server store2 127.0.0.1:18082 check" in text
    assert "10.0.0." not in text
    checked = subprocess.run([haproxy, "-c", "-f", str(local)], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_the_nginx_configuration_is_valid_as_shipped_and_as_the_bench_runs_it(
    tmp_path: Path,
) -> None:
    import shutil
    import subprocess

    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (bench/load.py --balancer nginx installs it)")
    from bench.load import NGINX_CONF, nginx_config

    prefix = tmp_path / "nginx"
    # As shipped: a file for the http context (/etc/nginx/conf.d/), in a minimal nginx.conf.
    shipped = tmp_path / "shipped.conf"
    shipped.write_text(
        f"pid {tmp_path / 'shipped.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{\n    include {NGINX_CONF};\n}}\n"
    )
    checked = subprocess.run([nginx, "-t", "-c", str(shipped)], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()
    text = NGINX_CONF.read_text()
    assert "max_fails=3 fail_timeout=10s" in text and "health_check" not in text.split("#")[0]
    local = tmp_path / "nginx.conf"
    local.write_text(nginx_config(18080, [18081, 18082], prefix))
    text = local.read_text()
    assert "listen 127.0.0.1:18080;" in text
    assert "server 127.0.0.1:18081 max_fails=3 fail_timeout=10s;" in text
    assert "server 127.0.0.1:18082 max_fails=3 fail_timeout=10s;" in text
    assert "10.0.0." not in text
    checked = subprocess.run(
        [nginx, "-t", "-c", str(local), "-p", str(prefix)], capture_output=True
    )
    assert checked.returncode == 0, checked.stderr.decode()
