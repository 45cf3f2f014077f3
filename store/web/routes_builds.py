"""Build pages: ``/r/<namespace>/<repo>/builds`` (history, start a build, the Git source and
rules for those who may push) and ``/r/<namespace>/<repo>/builds/<id>`` (the log, followed
live while the build runs: the page polls ``…/log?after=N``)."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from store.accounts.models import Account
from store.builds import api, service, ssh
from store.deps import DbSession
from store.errors import ValidationFailed
from store.web import forms
from store.web.forms import Form, FormState
from store.web.routing import RequiredAccount, Viewer, page_router
from store.web.templating import render

router = page_router()


def rules_text(source: Any) -> str:
    if source is None:
        return "branch main latest Dockerfile ."
    return "\n".join(
        f"{r.ref_kind} {r.pattern} {r.docker_tag} {r.dockerfile} {r.context}" for r in source.rules
    )


def args_text(source: Any) -> str:
    if source is None or not source.rules:
        return ""
    return "\n".join(f"{k}={v}" for k, v in sorted((source.rules[0].build_args or {}).items()))


def parse_rules(text: str, args_text: str) -> list[service.RuleSpec]:
    """One rule a line: ``KIND PATTERN TAG [DOCKERFILE] [CONTEXT]``; the build arguments
    (``KEY=VALUE`` lines) apply to every rule."""
    args: dict[str, str] = {}
    for line in forms.lines(args_text):
        key, sep, value = line.partition("=")
        if not sep:
            raise ValidationFailed(f"'{line}' is not KEY=VALUE", code="bad_rule", field="args")
        args[key.strip()] = value.strip()
    rules = []
    for line in forms.lines(text):
        parts = line.split()
        if not 3 <= len(parts) <= 5:
            raise ValidationFailed(
                f"'{line}' is not KIND PATTERN TAG [DOCKERFILE] [CONTEXT]",
                code="bad_rule",
                field="rules",
            )
        rules.append(
            service.RuleSpec(
                ref_kind=parts[0],
                pattern=parts[1],
                docker_tag=parts[2],
                dockerfile=parts[3] if len(parts) > 3 else "Dockerfile",
                context=parts[4] if len(parts) > 4 else ".",
                build_args=args,
            )
        )
    return rules


def _page(
    request: Request,
    session: Session,
    viewer: Account | None,
    namespace: str,
    repo: str,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    name = service.repository_name(namespace, repo)
    service.require_reader(session, viewer, name)
    actions = service.repository_actions(session, viewer, name)
    can_push = "push" in actions
    source = service.get_source(session, name) if can_push else None
    settings = request.app.state.settings
    values = {
        "url": source.url if source else "",
        "rules": rules_text(source),
        "args": args_text(source),
        "schedule": str(source.schedule_minutes or "") if source else "",
        "timeout": str(source.timeout_seconds) if source else str(settings.build_timeout),
    }
    return render(
        request,
        "builds/list.html",
        {
            "name": name,
            "builds": service.list_builds(session, name=name),
            "can_push": can_push,
            "source": source,
            "values": values,
            "form": form,
            "webhook_url": api.webhook_url(settings, name),
            "host_keys": ssh.fingerprints(source.known_hosts or "") if source else [],
            "secret": request.session.pop("build_webhook_secret", None),
        },
        status=status,
        no_store=True,
    )


@router.get("/r/{namespace}/{repo}/builds")
def builds_page(
    request: Request, namespace: str, repo: str, session: DbSession, viewer: Viewer
) -> Response:
    return _page(request, session, viewer, namespace, repo)


@router.post("/r/{namespace}/{repo}/builds/settings")
def save_settings(
    request: Request,
    namespace: str,
    repo: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = service.repository_name(namespace, repo)
    settings = request.app.state.settings

    def save() -> tuple[Any, str | None]:
        schedule = forms.optional_int(form, "schedule", what="schedule", low=5, high=44640)
        timeout = forms.optional_int(form, "timeout", what="timeout", low=30, high=86400)
        return service.configure(
            session,
            settings,
            actor=account,
            name=name,
            url=forms.text(form, "url"),
            rules=parse_rules(forms.text(form, "rules"), forms.text(form, "args")),
            deploy_key=forms.text(form, "deploy_key") or None,
            clear_deploy_key=forms.checkbox(form, "clear_deploy_key"),
            generate_deploy_key=forms.checkbox(form, "generate_deploy_key"),
            known_hosts=forms.text(form, "known_hosts") or None,
            clear_known_hosts=forms.checkbox(form, "clear_known_hosts"),
            schedule_minutes=schedule,
            timeout_seconds=timeout,
            rotate_secret=forms.checkbox(form, "rotate_secret"),
        )

    def saved(outcome: tuple[Any, str | None]) -> Response:
        _, secret = outcome
        if secret:
            request.session["build_webhook_secret"] = secret
        return forms.redirect_with(request, "The build settings are saved.", f"/r/{name}/builds")

    return forms.submit(
        session,
        form,
        "source",
        save,
        failed=partial(_page, request, session, account, namespace, repo),
        done=saved,
    )


@router.post("/r/{namespace}/{repo}/builds")
def start_build(
    request: Request,
    namespace: str,
    repo: str,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = service.repository_name(namespace, repo)
    return forms.submit(
        session,
        form,
        "build",
        lambda: service.trigger_manual(
            session,
            actor=account,
            name=name,
            ref=forms.text(form, "ref") or "main",
            commit_sha=forms.text(form, "commit") or None,
        ),
        failed=partial(_page, request, session, account, namespace, repo),
        done=lambda build: forms.redirect_with(
            request, f"Build of {build.ref} queued.", f"/r/{name}/builds/{build.id}"
        ),
    )


@router.get("/r/{namespace}/{repo}/builds/{build_id}")
def build_page(
    request: Request,
    namespace: str,
    repo: str,
    build_id: uuid.UUID,
    session: DbSession,
    viewer: Viewer,
) -> Response:
    name = service.repository_name(namespace, repo)
    service.require_reader(session, viewer, name)
    build = service.get_build(session, name=name, build_id=build_id)
    final = build.final
    piece = service.read_log(session, build.id, limit=100_000)
    settings = request.app.state.settings
    host = settings.registry_url.split("://", 1)[-1]
    return render(
        request,
        "builds/build.html",
        {
            "name": name,
            "build": build,
            "final": final,
            "log": piece.text,
            "next": piece.next_seq,
            "can_push": "push" in service.repository_actions(session, viewer, name),
            "pull": f"docker pull {host}/{name}:{build.docker_tag}",
        },
        no_store=True,
    )


@router.get("/r/{namespace}/{repo}/builds/{build_id}/log")
def build_log(
    namespace: str,
    repo: str,
    build_id: uuid.UUID,
    session: DbSession,
    viewer: Viewer,
    after: int = -1,
) -> Response:
    """What the log page polls: the log after chunk ``after``, the status, whether final."""
    piece = api.log_piece(session, viewer, namespace, repo, build_id, max(-1, after))
    piece["build_id"] = str(piece["build_id"])
    return JSONResponse(piece, headers={"Cache-Control": "no-store"})


@router.post("/r/{namespace}/{repo}/builds/{build_id}/cancel")
def cancel_build(
    request: Request,
    namespace: str,
    repo: str,
    build_id: uuid.UUID,
    session: DbSession,
    account: RequiredAccount,
    form: Form,
) -> Response:
    name = service.repository_name(namespace, repo)
    service.require_pusher(session, account, name)
    service.get_build(session, name=name, build_id=build_id)
    here = f"/r/{name}/builds/{build_id}"
    return forms.submit(
        session,
        form,
        "cancel",
        lambda: service.cancel(session, actor=account, build_id=build_id),
        failed=forms.refused_back(request, here),
        done=lambda build: forms.redirect_with(
            request, "Canceled." if build.status == "canceled" else "Cancel requested.", here
        ),
    )
