"""`store registry config|sync` and `store keys list|rotate|activate|retire`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx

from store.cli._common import (
    add_command,
    add_json_option,
    command,
    emit,
    load_settings,
    resolve_actor,
    table,
    unit_of_work,
)
from store.keys import service as keys
from store.keys.models import SigningKey
from store.registry import config as registry_config
from store.registry import sync as registry_sync
from store.registry import visibility as registry_visibility

Subparsers = argparse._SubParsersAction


def register(subparsers: Subparsers) -> None:
    _register_registry(subparsers)
    _register_keys(subparsers)


def _register_registry(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "registry",
        help="configure and reconcile the Docker registry",
        description="Write the registry's configuration and reconcile the hub with it.",
    )
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    cfg = sub.add_parser(
        "config",
        help="write config.yml and bundle.pem for distribution (docker-registry)",
        description=(
            "Write a distribution 2.8 config.yml (token auth against this store, notifications "
            "to it) and bundle.pem (certificates of every registry key not retired) into DIR. "
            "The registry reads the bundle only when it starts."
        ),
    )
    cfg.add_argument("--registry-url", help="where clients reach the registry (default: setting)")
    cfg.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    cfg.add_argument("--storage-dir", type=Path, help="blob storage directory (default: DIR/data)")
    cfg.add_argument("--addr", help="listen address HOST:PORT (default: from the registry URL)")
    add_json_option(cfg)
    cfg.set_defaults(func=_config)

    sync = sub.add_parser(
        "sync",
        help="reconcile hub repositories and tags with /v2/_catalog",
        description="List the registry's repositories and tags and update the hub to match.",
    )
    sync.add_argument("--registry-url", help="registry address (default: setting)")
    sync.add_argument("--prune", action="store_true", help="remove repositories the registry lacks")
    add_json_option(sync)
    sync.set_defaults(func=_sync)

    vis = add_command(
        sub,
        "visibility",
        _visibility,
        help="show or set whether a repository is private or public",
        json=True,
        actor=True,
    )
    vis.add_argument("repository", metavar="REPOSITORY", help="NAMESPACE/NAME")
    vis.add_argument(
        "visibility",
        nargs="?",
        choices=registry_visibility.VISIBILITIES,
        help="private (only members, robots, administrators and entitled customers pull) or "
        "public (anyone pulls); omitted: show the setting",
    )


def _register_keys(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="list and rotate the store's signing keys (registry tokens, licenses)",
        description="The store's signing keys. See docs/registry.md for the rotation procedure.",
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    lst = sub.add_parser(
        "list",
        help="list signing keys",
        description=(
            "List the signing keys and their state: published (trusted, not yet signing), "
            "signing, trusted (signed before, still accepted) or retired."
        ),
    )
    lst.add_argument(
        "--purpose",
        choices=sorted(keys.PURPOSES),
        help="only the keys that sign licenses or registry tokens",
    )
    add_json_option(lst)
    lst.set_defaults(func=_list)

    rotate = sub.add_parser(
        "rotate",
        help="add a new signing key",
        description=(
            "Add a new key. A registry key is only published (put it in the bundle with "
            "`store registry config`, restart the registry, then `store keys activate KID`); "
            "a license key signs at once."
        ),
    )
    rotate.add_argument(
        "--purpose",
        required=True,
        choices=sorted(keys.PURPOSES),
        help="license (signs license documents) or registry (signs registry tokens)",
    )
    rotate.add_argument(
        "--activate",
        action="store_true",
        help="sign with the new key at once (registry: unsafe "
        "unless the registry already trusts it)",
    )
    add_json_option(rotate)
    rotate.set_defaults(func=_rotate)

    act = sub.add_parser(
        "activate",
        help="make a published key the signing key",
        description=(
            "Sign with KID from now on. For a registry key, first publish it in bundle.pem "
            "(`store registry config`) and restart the registry."
        ),
    )
    act.add_argument("kid", metavar="KID", help="the key's id (see `store keys list`)")
    add_json_option(act)
    act.set_defaults(func=_activate)

    retire = sub.add_parser(
        "retire",
        help="stop trusting a key (registry: once its last token has expired)",
        description=(
            "Stop trusting KID. The key that signs now cannot be retired, and a registry key "
            "only once the last token it signed has expired."
        ),
    )
    retire.add_argument("kid", metavar="KID", help="the key's id (see `store keys list`)")
    add_json_option(retire)
    retire.set_defaults(func=_retire)


# --- registry ---------------------------------------------------------------------------


@command
def _config(args: argparse.Namespace) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        written = registry_config.write(
            session,
            settings,
            registry_url=args.registry_url or settings.registry_url,
            out_dir=args.out,
            storage_dir=args.storage_dir,
            addr=args.addr,
        )
    data = {
        "config": str(written.config_path),
        "bundle": str(written.bundle_path),
        "trusted_kids": written.kids,
        "realm": f"{settings.public_url}/token",
        "events_url": written.events_url,
    }
    emit(
        args,
        data,
        text=lambda d: (
            f"Wrote {d['config']}\nWrote {d['bundle']} ({len(d['trusted_kids'])} key(s))\n"
            f"Start the registry with: docker-registry serve {d['config']}\n"
            "(restart it whenever the bundle changes: it is read only at start)"
        ),
    )
    return 0


@command
def _sync(args: argparse.Namespace) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        key = keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
        signer = keys.load(key, settings.resolved_secret_key)
        with httpx.Client(timeout=30.0) as http:
            client = registry_sync.RegistryClient(
                settings, signer, base_url=args.registry_url or settings.registry_url, http=http
            )
            report = registry_sync.sync(session, client, prune=args.prune)
    emit(
        args,
        report.as_dict(),
        text=lambda d: (
            f"{d['repositories']} repositories; {len(d['created'])} new, "
            f"{len(d['removed'])} removed; tags: +{d['tags_added']} ~{d['tags_updated']} "
            f"-{d['tags_removed']}; platforms read for {d['platforms_filled']} tags"
        ),
    )
    return 0


@command
def _visibility(args: argparse.Namespace) -> int:
    """Show or set a repository's visibility. Private (the default): only members of its
    namespace, its robots, administrators and, for a product's repositories, customers
    holding a usable entitlement pull it and find it in search. Public: anyone does. A
    repository of a published product whose tiers are all free and public is public either way;
    one of a product sold through a paid tier cannot be marked public (exit 1)."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        if args.visibility is None:
            view = registry_visibility.get_visibility(session, account=actor, name=args.repository)
        else:
            view = registry_visibility.set_visibility(
                session, actor=actor, name=args.repository, visibility=args.visibility
            )
        data = dict(view.__dict__)
    emit(
        args,
        data,
        text=lambda d: (
            f"{d['repository']}: {d['visibility']}"
            + (" (anyone may pull it)" if d["public"] else " (not public)")
            + (f"\n{d['note']}" if d["note"] else "")
        ),
    )
    return 0


# --- keys -------------------------------------------------------------------------------


def _key_out(key: SigningKey, current: set[str]) -> dict[str, Any]:
    if key.retired_at is not None:
        state = "retired"
    elif key.kid in current:
        state = "signing"
    elif key.activated_at is None:
        state = "published"
    else:
        state = "trusted"
    return {
        "kid": key.kid,
        "purpose": key.purpose,
        "alg": key.alg,
        "state": state,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
    }


def _current_kids(session: Any) -> set[str]:
    kids = set()
    for purpose in keys.PURPOSES:
        key = keys.current_key(session, purpose)
        if key is not None:
            kids.add(key.kid)
    return kids


def _keys_text(rows: list[dict[str, Any]]) -> str:
    return table(rows, ["kid", "purpose", "alg", "state", "created_at"], empty="No keys yet.")


@command
def _list(args: argparse.Namespace) -> int:
    with unit_of_work() as session:
        current = _current_kids(session)
        rows = [_key_out(k, current) for k in keys.list_keys(session, args.purpose)]
    emit(args, rows, text=_keys_text)
    return 0


@command
def _rotate(args: argparse.Namespace) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        if args.purpose == "registry":
            # The key being replaced must exist, or the new one would be the only one.
            keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
        key = keys.rotate(
            session,
            purpose=args.purpose,
            secret=settings.resolved_secret_key,
            activate=True if args.activate else None,
        )
        data = _key_out(key, _current_kids(session))
    hint = ""
    if args.purpose == "registry" and data["state"] == "published":
        hint = (
            "\nNext: `store registry config ...` (adds it to bundle.pem), restart the registry, "
            f"then `store keys activate {data['kid']}`."
        )
    emit(args, data, text=lambda d: f"New {d['purpose']} key {d['kid']} ({d['state']}){hint}")
    return 0


@command
def _activate(args: argparse.Namespace) -> int:
    with unit_of_work() as session:
        key = keys.activate(session, kid=args.kid)
        data = _key_out(key, _current_kids(session))
    emit(
        args,
        data,
        text=lambda d: f"{d['kid']} signs now (running stores pick it up within 30 s).",
    )
    return 0


@command
def _retire(args: argparse.Namespace) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        key = keys.retire(session, kid=args.kid, token_ttl=settings.registry_token_ttl)
        data = _key_out(key, _current_kids(session))
    emit(args, data, text=lambda d: f"{d['kid']} is retired.")
    return 0
