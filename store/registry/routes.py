"""Registry-facing routes: the token endpoint and the notifications intake.

Both are plain Starlette routes (no dependency injection, manual parsing, orjson): /token
is on the path of every pull and push, and the performance floor shows that FastAPI's
dependency machinery alone costs about a third of such a request. Their errors use the
registry's shape ``{"errors": [{"code", "message", "detail"}]}``. The JSON API for people
("why can't I pull?", pull history) is in :mod:`store.registry.api`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson
from fastapi import APIRouter
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from store import ratelimit, security
from store.config import Settings
from store.db import read_only_connection, utcnow
from store.observability import metrics
from store.registry import credentials, events, grants, lookup, pull_search, refresh, tokens
from store.registry.explain import explain_denials
from store.registry.scopes import ParsedScopes, parse_scopes

log = logging.getLogger("store.registry")
router = APIRouter()
MAX_FORM_BYTES = 16 * 1024
MAX_EVENTS_BYTES = 4 * 1024 * 1024
_JSON = "application/json"
# Every 401 names how to authenticate (RFC 9110): the token endpoint takes Basic credentials.
TOKEN_CHALLENGE = 'Basic realm="store"'  # noqa: S105  (a header, not a password)


# --- responses ---------------------------------------------------------------------------


def registry_error(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    if status == 401 and not headers:
        headers = {"WWW-Authenticate": TOKEN_CHALLENGE}
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


_JSON_HEADERS = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))


class _JSONResponse(Response):
    """A JSON body with pre-encoded headers (Response.__init__ re-encodes them each time)."""

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS]


def _json(data: Any, status: int = 200) -> Response:
    return _JSONResponse(orjson.dumps(data), status)


# --- per-app state (built once, on first use) -------------------------------------------------


class RegistryState:
    def __init__(self, app: Any) -> None:
        settings: Settings = app.state.settings
        self.settings = settings
        self.password_cache = credentials.PasswordCache()
        self.touch_limiter = credentials.TouchLimiter()
        self.reuse = tokens.Reuse()
        self.realm_service = settings.registry_service
        bind = app.state.sessionmaker.kw.get("bind")
        # The reads of every token request (store.registry.lookup): raw sqlite3 on the
        # event loop, psycopg's async connections on PostgreSQL, the bound connection in
        # tests. Writes and rare reads go through SQLAlchemy (``connect``).
        self.db = lookup.open_db(bind)
        self._shared = bind if isinstance(bind, Connection) else None
        self._engine = bind if isinstance(bind, Engine) else None
        # Work started by a request and not waited for (kept from the garbage collector).
        self._background: set[asyncio.Task[None]] = set()
        # The signing key's look-ups on a thread, by purpose, while they run.
        self._signer_lookups: dict[str, asyncio.Future[Any]] = {}
        # On a connection shared with the caller (tests), which a thread must not use, such
        # work is done at once instead.
        self.later = self._later if self._engine is not None else None
        # Pull counts reach search in batches on a thread of this process; not on a
        # connection shared with the caller (tests), which a thread must not use.
        self.pull_search = (
            pull_search.PullSearch(lambda: app.state.sessionmaker)
            if self._engine is not None
            else None
        )

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A short unit of work through SQLAlchemy, committed on exit; never held across an
        await. Under tests the app is bound to one connection in an outer transaction: that
        connection is used as is."""
        if self._shared is not None:
            yield self._shared
            return
        assert self._engine is not None
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Like ``connect`` for reads only: never waits for a writer (run on the event loop)."""
        if self._shared is not None:
            yield self._shared
            return
        assert self._engine is not None
        with read_only_connection(self._engine) as conn:
            yield conn

    def _later(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a thread of the pool without waiting for it (failures logged)."""
        task = asyncio.get_running_loop().create_task(run_in_threadpool(_logged, work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def look_up_signer(self, keyring: Any, purpose: str) -> None:
        """Look the signing key in force up again on a thread of the pool, awaited.

        The requests that find it due while a look-up runs wait for that one: it began
        after the bound had passed, as theirs would have, and they would otherwise each
        take a thread of the pool to wait on the key ring's lock (every request in flight
        on the worker when the bound passed: up to one thread each, kept idle afterwards,
        each with its own stack and malloc arena)."""
        loop = asyncio.get_running_loop()
        running = self._signer_lookups.get(purpose)
        if running is None or running.get_loop() is not loop:
            running = self._signer_lookups[purpose] = loop.create_task(
                run_in_threadpool(keyring.signer, purpose)
            )

            def finished(task: asyncio.Future[Any]) -> None:
                if self._signer_lookups.get(purpose) is task:
                    del self._signer_lookups[purpose]
                if not task.cancelled():
                    task.exception()  # retrieved: each waiter got it already

            running.add_done_callback(finished)
        # shielded: a waiter cancelled (a client gone) does not cancel the others' look-up
        await asyncio.shield(running)

    def dispose(self) -> None:
        if self.pull_search is not None:
            self.pull_search.stop()
        self.db.close()


def _logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:
        log.warning("background work of the token endpoint failed", exc_info=True)


def registry_state(app: Any) -> RegistryState:
    state = getattr(app.state, "registry", None)
    if state is None:
        state = RegistryState(app)
        app.state.registry = state
    return state


# --- the token endpoint -----------------------------------------------------------------------


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise credentials.BadCredentials("malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise credentials.BadCredentials("malformed Basic credentials")
    return username, password


class _Params:
    """Query or form parameters with repeated keys (never changed once made)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = tuple(pairs)

    @cached_property
    def scopes(self) -> ParsedScopes:
        """The ``scope`` parameters, parsed once (kept with a cached query's parameters)."""
        return parse_scopes(self.getlist("scope"))

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]


def query_pairs(raw: bytes) -> list[tuple[str, str]]:
    """The query string's (key, value) pairs, as ``parse_qsl(..., keep_blank_values=True)``
    gives them, with the percent-decoding skipped for pairs that need none (a token
    request's parameters usually need it for its scope only)."""
    pairs: list[tuple[str, str]] = []
    for part in raw.decode("latin-1").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in part or "+" in part:
            key, value = unquote_plus(key), unquote_plus(value)
        pairs.append((key, value))
    return pairs


# GET /token's query strings, parsed: a registry's clients ask for the same few scopes over
# and over, and parsing them (percent-decoding, scope syntax) is pure.
_QUERIES: dict[bytes, _Params] = {}
_QUERIES_MAX = 1024
_QUERY_CACHED_BYTES = 1024


def _parsed_query(raw: bytes) -> _Params:
    found = _QUERIES.get(raw)
    if found is None:
        found = _Params(query_pairs(raw))
        if len(raw) <= _QUERY_CACHED_BYTES:
            if len(_QUERIES) >= _QUERIES_MAX:
                _QUERIES.clear()
            _QUERIES[raw] = found
    return found


async def _params(request: Request) -> _Params:
    if request.method == "GET":
        return _parsed_query(request.scope["query_string"])
    query = query_pairs(request.scope["query_string"])
    body = b""
    # The OAuth2 POST from containers/image is chunked (no Content-Length): read the stream.
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("form too large")
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    # Query parameters count too (some clients put service/scope there on POST).
    return _Params(query + pairs)


async def token_endpoint(request: Request) -> Response:
    """Distribution token auth (GET, Basic or anonymous) and its OAuth2 variant (POST)."""
    state = registry_state(request.app)
    try:
        params = await _params(request)
    except ValueError:
        metrics.token_decision("rejected", "too_large")
        return registry_error(400, "UNSUPPORTED", "the request body is too large")
    return await _token(request, state, params)


async def _token(request: Request, state: RegistryState, params: _Params) -> Response:
    settings = state.settings
    service = params.get("service")
    if service and service != settings.registry_service:
        metrics.token_decision("rejected", "unknown_service")
        return registry_error(400, "UNSUPPORTED", f"unknown service {service!r}")
    # A scope that cannot be parsed, or asks for nothing this registry knows, is dropped:
    # the token carries no access for it (distribution's token specification), never a 500.
    parsed = params.scopes
    if parsed.invalid:
        metrics.token_decision("rejected", "invalid_scope")
    names = [s.name for s in parsed.scopes if s.type == "repository"]
    connect = state.connect
    ctx = credentials.CredentialContext(
        db=state.db,
        connect=connect,
        settings=settings,
        sessionmaker=request.app.state.sessionmaker,
        cache=state.password_cache,
        now=utcnow(),
        keyring=request.app.state.keyring,
        repository=names[0] if names else "",
    )
    # Credential failures are rate limited (store.ratelimit): a dict lookup here; a
    # password that must really be checked takes an attempt first (a write in a turn of
    # its own), a bad access token is counted after it failed.
    guard = ratelimit.token_guard(request.app, credentials.unguessable_username)
    sent = ratelimit.token_credentials(request, params)
    if (
        sent is not None
        and (wait := guard.wait(state.read, request, *sent, state.later)) is not None
    ):
        metrics.token_decision("rejected", "rate_limited")
        return _too_many(wait)
    ctx.attempts = _Attempts(request, guard, connect)
    try:
        principal, offline = await _authenticate(request, params, ctx)
    except ratelimit.Refused as exc:
        metrics.token_decision("rejected", "rate_limited")
        return _too_many(exc.wait)
    except security.ChecksBusy as exc:
        metrics.token_decision("rejected", "busy")
        return _too_many(int(exc.extra["headers"]["Retry-After"]), "too many log-ins at once")
    except credentials.BadCredentials as exc:
        counted = ctx.counted or isinstance(exc, credentials.AccountDisabled)
        if sent is not None and not counted:
            await request.app.state.write_turns.run(guard.failed, connect, request, *sent)
        metrics.token_decision("denied", "bad_credentials")
        return registry_error(401, "UNAUTHORIZED", exc.message)
    if ctx.touch:
        due = state.touch_limiter.due(ctx.touch)
        if due:
            await request.app.state.write_turns.run(credentials.touch_tokens, connect, due, ctx.now)
    facts = ctx.facts
    missing = [n for n in names if n not in facts]
    if missing:
        facts.update(await lookup.facts(state.db, principal, missing, ctx.now))
    decision = grants.decide(principal, parsed.scopes, facts)
    if decision.denied and not decision.granted:
        # Nothing asked for is allowed: say why in the client's own output (skopeo/docker
        # print errors[0].message of a 401), with where to get access.
        return await _denied(request, principal, decision, facts)
    keyring = request.app.state.keyring
    if state.later is not None and keyring.due("registry"):
        # The look-up every few seconds on a thread, awaited: the event loop goes on with
        # other requests, and this one signs with the key in force, so a key activated by
        # another process signs on every worker within the bound (a registry told to stop
        # trusting the old key after it refuses tokens signed with it).
        await state.look_up_signer(keyring, "registry")
    signer = keyring.signer("registry")
    issued = state.reuse.mint(
        signer,
        issuer=settings.registry_issuer,
        audience=settings.registry_service,
        subject=principal.subject,
        access=decision.access(),
        ttl=settings.registry_token_ttl,
        not_after=_not_after(principal, decision, facts),
    )
    if not offline:
        metrics.token_granted(partial=bool(decision.denied), login=not parsed.scopes)
        return _JSONResponse(_token_body(issued))
    body: dict[str, Any] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": tokens.rfc3339(issued.issued_at),
    }
    if isinstance(offline, str):
        body["refresh_token"] = offline  # rotated by the refresh grant
    else:
        secret = await request.app.state.write_turns.run(
            _issue_refresh_token, request.app, principal, params.get("client_id"), ctx.now
        )
        if secret is not None:
            body["refresh_token"] = secret
    metrics.token_granted(partial=bool(decision.denied), login=not parsed.scopes)
    return _json(body)


def _not_after(
    principal: grants.Principal, decision: grants.Decision, facts: dict[str, grants.RepoFacts]
) -> int | None:
    """The last second a registry token may live: not past the end of the credential it was
    made from, nor past the end of an entitlement a pull it grants hangs on."""
    ends = [principal.expires_at] if principal.expires_at is not None else []
    for scope in decision.granted:
        repo = facts.get(scope.name)
        if repo is not None and repo.entitled and "pull" in scope.actions:
            end = grants.pull_ends(principal, repo)
            if end is not None:
                ends.append(end)
    return int(min(ends).timestamp()) if ends else None


def _token_body(issued: tokens.IssuedJWT) -> bytes:
    """The JSON of a token answer without a refresh token, put together directly: a JWT
    and an RFC 3339 time need no escaping (``orjson.dumps`` of the same dict, byte for
    byte; a test checks it)."""
    token = issued.token.encode()
    return b"".join(
        (
            b'{"token":"',
            token,
            b'","access_token":"',
            token,
            b'","expires_in":',
            str(int(issued.expires_in)).encode(),
            b',"issued_at":"',
            tokens.rfc3339(issued.issued_at).encode(),
            b'"}',
        )
    )


def _too_many(wait: int, what: str = "too many failed log-ins") -> Response:
    # skopeo prints "too many requests to registry" for a 429, docker the message
    # (docs/security.md); a 401 would read "invalid username/password" instead.
    return registry_error(
        429,
        "TOOMANYREQUESTS",
        f"{what}; try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


class _Attempts:
    """Password attempts at /token, reserved and given back in write turns of their own
    (on SQLite, never a second writing transaction inside another)."""

    def __init__(self, request: Request, guard: ratelimit.TokenGuard, connect: Any) -> None:
        self.request = request
        self.guard = guard
        self.connect = connect
        self.turns = request.app.state.write_turns

    async def reserve(self, username: str, password: str) -> ratelimit.Reservation:
        return await self.turns.run(
            self.guard.reserve, self.connect, self.request, username, password
        )

    async def release(self, reservation: ratelimit.Reservation | None) -> None:
        if reservation is not None and reservation.keys:
            await self.turns.run(self.guard.release, self.connect, reservation)


async def _authenticate(
    request: Request, params: _Params, ctx: credentials.CredentialContext
) -> tuple[grants.Principal, bool | str]:
    """The principal, and whether the client asked for a refresh token (offline access), or
    the rotated refresh token already made by a refresh grant."""
    if request.method == "POST":
        grant_type = params.get("grant_type")
        if grant_type == "refresh_token":
            rotate = params.get("access_type") == "offline" or params.get("offline_token") == "true"
            redeemed = await request.app.state.write_turns.run(
                _redeem_refresh_token, request.app, params.get("refresh_token"), rotate, ctx.now
            )
            return redeemed.principal, redeemed.secret or False
        if grant_type == "password":
            principal = await credentials.resolve(
                ctx, params.get("username"), params.get("password")
            )
            return principal, params.get("access_type") == "offline"
        raise credentials.BadCredentials(f"unsupported grant_type {grant_type!r}")
    basic = _basic(request)
    if basic is None:
        return grants.ANONYMOUS, False
    principal = await credentials.resolve(ctx, *basic)
    return principal, params.get("offline_token") == "true"


def _issue_refresh_token(
    app: Any, principal: grants.Principal, client_id: str, now: datetime
) -> str | None:
    with app.state.sessionmaker() as session:
        secret = refresh.issue(session, app.state.settings, principal, client_id=client_id, now=now)
        session.commit()
        return secret


def _redeem_refresh_token(app: Any, secret: str, rotate: bool, now: datetime) -> refresh.Redeemed:
    """Check (and slide or rotate) a refresh token; its own unit of work, committed even
    when refused, so a detected reuse revokes the family for good."""
    with app.state.sessionmaker() as session:
        try:
            redeemed = refresh.redeem(session, app.state.settings, secret, rotate=rotate, now=now)
        except refresh.RefreshRefused as exc:
            session.commit()
            raise credentials.BadCredentials(exc.message) from None
        session.commit()
        return redeemed


async def _denied(
    request: Request,
    principal: grants.Principal,
    decision: grants.Decision,
    facts: dict[str, grants.RepoFacts],
) -> Response:
    settings = registry_state(request.app).settings
    reasons = await run_in_threadpool(
        explain_denials,
        request.app.state.sessionmaker,
        settings,
        principal,
        decision.denied,
        facts,
    )
    first = reasons[0]
    metrics.token_decision("denied", first["reason"])
    return registry_error(401, "DENIED", first["message"], reasons)


router.add_route("/token", token_endpoint, methods=["GET", "POST"], include_in_schema=False)


# --- notifications ----------------------------------------------------------------------------


async def events_endpoint(request: Request) -> Response:
    """Registry notifications (``application/vnd.docker.distribution.events.v1+json``)."""
    settings = registry_state(request.app).settings
    expected = f"Bearer {settings.resolved_notify_secret}"
    if not security.constant_time_equals(request.headers.get("authorization", ""), expected):
        return registry_error(
            401,
            "UNAUTHORIZED",
            "bad notification credentials",
            headers={"WWW-Authenticate": 'Bearer realm="registry-notifications"'},
        )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in (events.MEDIA_TYPE, _JSON):
        return registry_error(415, "UNSUPPORTED", f"expected {events.MEDIA_TYPE}")
    body = await request.body()
    if len(body) > MAX_EVENTS_BYTES:
        return registry_error(413, "SIZE_INVALID", "envelope too large")
    try:
        envelope = orjson.loads(body)
        events.events_of(envelope)
    except (orjson.JSONDecodeError, events.MalformedEnvelope) as exc:
        return registry_error(400, "UNSUPPORTED", f"malformed envelope: {exc}")
    later = registry_state(request.app).pull_search
    outcome = await request.app.state.write_turns.run(
        _process_events, request.app, envelope, later is not None
    )
    if later is not None:
        later.mark(outcome.pulled)
    return _json(outcome.as_dict())


def _process_events(app: Any, envelope: Any, defer_search: bool) -> events.Outcome:
    with app.state.sessionmaker() as session:
        outcome = events.process(session, envelope, defer_search=defer_search)
        session.commit()
    return outcome


router.add_route("/registry/events", events_endpoint, methods=["POST"], include_in_schema=False)
