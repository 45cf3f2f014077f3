"""Scopes of the distribution token protocol: ``type[(class)]:name:actions``.

Clients repeat the ``scope`` parameter, put several scopes in one value separated by spaces
(the registry's challenge for a cross-repository mount does), and may ask for the same scope
twice (skopeo retries with the challenge scope added). Every form is accepted; requests for
the same resource are merged, and what cannot be parsed is reported, never granted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# distribution's reference grammar: path components of lowercase alphanumerics separated by
# ".", "_", "__" or runs of "-", joined by "/"; at most 255 characters in all.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TYPE = re.compile(r"^([a-z0-9]+)(?:\(([a-z0-9]+)\))?$")
MAX_NAME = 255
MAX_SCOPES = 32  # a real client asks for one to three; more is abuse
REPOSITORY_ACTIONS = ("pull", "push", "delete")
CATALOG = ("registry", "catalog")


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @property
    def namespace(self) -> str | None:
        """The first path component of a repository name with more than one component."""
        head, sep, _ = self.name.partition("/")
        return head if sep else None

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


class ScopeError(ValueError):
    """A scope that cannot be understood; the text says why."""


def valid_repository(name: str) -> bool:
    return len(name) <= MAX_NAME and _REPOSITORY.match(name) is not None


def parse_scope(text: str) -> Scope:
    """One scope; raises ScopeError. Unknown actions are dropped (never granted)."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions_text = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        raise ScopeError(f"'{text}' is not type:name:actions")
    match = _TYPE.match(kind)
    if match is None:
        raise ScopeError(f"'{kind}' is not a resource type")
    kind = match.group(1)  # the optional "(class)" is ignored, as distribution does
    actions = _actions(actions_text)
    if kind == "repository":
        if not valid_repository(name):
            raise ScopeError(f"'{name}' is not a valid repository name")
        actions = tuple(a for a in actions if a in REPOSITORY_ACTIONS or a == "*")
    elif (kind, name) == CATALOG:
        actions = tuple(a for a in actions if a == "*")
    else:
        raise ScopeError(f"'{kind}:{name}' is not a resource this registry knows")
    return Scope(kind, name, actions)


def _actions(text: str) -> tuple[str, ...]:
    seen: list[str] = []
    for action in text.split(","):
        action = action.strip()
        if action and action not in seen:
            seen.append(action)
    return tuple(seen)


@dataclass(frozen=True)
class ParsedScopes:
    scopes: tuple[Scope, ...]
    invalid: tuple[tuple[str, str], ...]  # (scope text, why)


def parse_scopes(values: Iterable[str]) -> ParsedScopes:
    """Every scope in repeated and space-separated values, merged per resource in order."""
    merged: dict[tuple[str, str], list[str]] = {}
    invalid: list[tuple[str, str]] = []
    count = 0
    for value in values:
        for text in value.split():
            count += 1
            if count > MAX_SCOPES:
                invalid.append((text, f"more than {MAX_SCOPES} scopes"))
                continue
            try:
                scope = parse_scope(text)
            except ScopeError as exc:
                invalid.append((text, str(exc)))
                continue
            actions = merged.setdefault((scope.type, scope.name), [])
            actions.extend(a for a in scope.actions if a not in actions)
    scopes = tuple(Scope(t, n, tuple(a)) for (t, n), a in merged.items())
    return ParsedScopes(scopes, tuple(invalid))
