"""The deployment files read as their tools read them: the Dockerfile's stages, ENV and
CMD; docker-compose.yml's services with ``${…}`` filled from an env file as Compose fills
them; the systemd units. Used by the consistency tests (tests/ops/test_ops_deploy.py) and
by the image end-to-end test, which starts the built image with the settings compose gives it.
"""

from __future__ import annotations

import configparser
import json
import re
import secrets
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
SYSTEMD = ROOT / "deploy" / "systemd"


# --- Dockerfile -------------------------------------------------------------------------


def stages(text: str | None = None) -> list[list[str]]:
    """The instructions of each stage, continuation lines joined, comments left out; what
    comes before the first FROM (global ARGs) is stage 0."""
    text = DOCKERFILE.read_text() if text is None else text
    joined = re.sub(r"\\\n\s*", " ", text)
    result: list[list[str]] = [[]]
    for line in joined.splitlines():
        if line.startswith("FROM "):
            result.append([])
        if line.strip() and not line.startswith("#"):
            result[-1].append(line)
    return result


def instruction(stage: list[str], name: str) -> str:
    """The arguments of the one ``name`` instruction of a stage."""
    [line] = [ln for ln in stage if ln.startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def image_env(stage: list[str]) -> dict[str, str]:
    """The ENV of a stage (``ENV A=1 B=2`` form), ``$PATH`` left as written."""
    env: dict[str, str] = {}
    for line in stage:
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def image_cmd() -> list[str]:
    """The final stage's CMD, exec form."""
    cmd = json.loads(instruction(stages()[-1], "CMD"))
    assert isinstance(cmd, list)
    return [str(c) for c in cmd]


# --- docker-compose.yml -----------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"(\w+)=(.*)", line.strip())
        if match:
            values[match[1]] = match[2]
    return values


def example_variables(**overrides: str) -> dict[str, str]:
    """deploy/compose.env.example as an operator fills it in: every ``NAME=`` left blank
    there (the secrets) gets a generated value; ``overrides`` replace any value."""
    variables = read_env_file(COMPOSE_ENV_EXAMPLE)
    for name, value in variables.items():
        if not value:
            variables[name] = secrets.token_urlsafe(40)
    return variables | overrides


def interpolate(value: str, variables: dict[str, str]) -> str:
    """``${X}``, ``${X:-default}`` and ``${X:?message}`` as Compose expands them; a required
    variable that is unset or empty raises ``KeyError`` with its message."""

    def one(match: re.Match[str]) -> str:
        name, kind, arg = match[1], match[2], match[3]
        current = variables.get(name, "")
        if kind == "?" and not current:
            raise KeyError(f"{name}: {arg}")
        if kind == "-" and not current:
            return arg
        return current

    return _VARIABLE.sub(one, value)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_environment(service: str, variables: dict[str, str]) -> dict[str, str]:
    """The environment Compose gives ``service``, ``${…}`` filled from ``variables``."""
    environment = compose()["services"][service].get("environment", {})
    return {key: interpolate(str(value), variables) for key, value in environment.items()}


# --- systemd ----------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def unit_comment_command(name: str, program: str) -> list[str]:
    """The command line a unit's header comment documents (a shell command that runs
    ``program``, continued over ``\\`` lines), as argv from the program on."""
    comment = "\n".join(
        line[1:].strip()
        for line in (SYSTEMD / name).read_text().splitlines()
        if line.startswith("#")
    )
    joined = re.sub(r"\\\n\s*", " ", comment)
    for line in joined.splitlines():
        if program in line:
            words = shlex.split(line.split(program, 1)[1].rstrip("'"))
            return [program, *words]
    raise AssertionError(f"{name} documents no {program} command")
