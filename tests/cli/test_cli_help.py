"""`store --help` is complete and plain text, for every command the parser has.

The commands are found by walking the parser that `store` itself builds, so a command or an
option added later is checked too: one without a help text fails
`test_every_argument_has_help[<command>]`, naming the command and the argument.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

import store
from store.cli.main import build_parser
from tests.cli._support import Run

Command = tuple[str, ...]

# reStructuredText that docstrings carry and `--help` must not show: inline literals,
# roles such as :func:`x` (or :py:func:`x`), directives, and a paragraph ending in "::".
RST_MARKUP = re.compile(r"``|:[a-z]+(?::[a-z]+)?:`|^\s*\.\. [a-z-]+::|\w::$", re.MULTILINE)


def walk(
    parser: argparse.ArgumentParser, path: Command = ()
) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    """Every (sub)command of ``parser``, itself first, with the words that select it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def _has_text(help: str | None) -> bool:
    return bool(help and help.strip()) and help != argparse.SUPPRESS


def missing_helps(parser: argparse.ArgumentParser) -> list[str]:
    """The arguments of one command that have no help text, named as in its usage line:
    options, positional arguments, and subcommands missing from its list of actions."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            # The ACTION positional is described by its list of subcommands, one line each;
            # argparse leaves a subcommand added without help= out of that list.
            described = {
                id(action.choices[choice.dest])
                for choice in action._choices_actions
                if _has_text(choice.help)
            }
            missing += [
                f"subcommand {name}"
                for name, sub in action.choices.items()
                if id(sub) not in described
            ]
        elif not _has_text(action.help):
            missing.append("/".join(action.option_strings) or str(action.metavar or action.dest))
    return missing


PARSERS = dict(walk(build_parser()))
COMMANDS = list(PARSERS)


def _label(path: Command) -> str:
    return " ".join(("store", *path))


def test_the_walk_finds_every_command_group() -> None:
    found = set(COMMANDS)
    for path in [
        (),
        ("admin", "create"),
        ("users", "show"),
        ("products", "create"),
        ("tiers", "create"),
        ("entitlements", "grant"),
        ("billing", "refund"),
        ("signing", "keys", "revoke"),
        ("sign",),
        ("audit", "list"),
    ]:
        assert path in found, _label(path)
    assert len(COMMANDS) > 80


@pytest.mark.parametrize("path", COMMANDS, ids=_label)
def test_every_argument_has_help(path: Command) -> None:
    missing = missing_helps(PARSERS[path])
    assert not missing, f"`{_label(path)}`: no help text for {', '.join(missing)}"


@pytest.mark.parametrize("path", COMMANDS, ids=_label)
def test_help_is_plain_text(run: Run, path: Command) -> None:
    result = run(*path, "--help")
    assert result.code == 0, result.err
    assert result.out.startswith(f"usage: {_label(path)}")
    markup = RST_MARKUP.findall(result.out)
    assert not markup, f"`{_label(path)} --help` shows reStructuredText {markup}:\n{result.out}"


def test_version(run: Run) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out == f"store {store.__version__}\n"


def test_version_of_the_installed_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "store.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"store {store.__version__}"


# --- the checks themselves catch what they are for ---------------------------------------


def test_missing_helps_names_each_argument_without_help() -> None:
    parser = argparse.ArgumentParser(prog="store")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    described = sub.add_parser("described", help="has a help")
    described.add_argument("--fine", help="has a help")
    described.add_argument("--bare")
    described.add_argument("--blank", help=" ")
    described.add_argument("--hidden", help=argparse.SUPPRESS)
    described.add_argument("thing", metavar="THING")
    sub.add_parser("silent")

    assert missing_helps(parser) == ["subcommand silent"]
    assert missing_helps(described) == ["--bare", "--blank", "--hidden", "THING"]


@pytest.mark.parametrize(
    "text",
    [
        "wraps each handler with ``command``",
        "see :func:`store.cli._common.command`",
        "a :class:`Settings` or :py:meth:`x.y`",
        "for example::\n\n    store db upgrade",
        ".. note:: read this",
    ],
)
def test_rst_markup_is_recognised(text: str) -> None:
    assert RST_MARKUP.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "run `store db upgrade` first",
        "address to bind (default 127.0.0.1), :: for every IPv6 address",
        "a time such as 12:30:00",
    ],
)
def test_plain_text_is_not_mistaken_for_markup(text: str) -> None:
    assert not RST_MARKUP.search(text)
