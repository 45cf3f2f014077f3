"""Rate limits on guessing: log-in failures, /token credential failures and sign-ups.

Counters live in the database (``rate_limits``), so every store process behind a load
balancer sees the same counts. A counter is a fixed window: the row ``(key, window_start)``
is created or incremented by one atomic upsert (``INSERT .. ON CONFLICT DO UPDATE ..
RETURNING``, SQLite ≥ 3.35 and PostgreSQL), and a key is over its limit while the current
window's count has reached the limit; ``Retry-After`` is the rest of the window. Rows of
ended windows are deleted whenever a new window row is made.

Keys are ``<rule>:<sha256(subject)>``: no username, e-mail address or IP address (nor a
password typed into the username field) is stored in the clear.

Password checks are *reserved* before they run (:func:`reserve`): one conditional upsert
per key (``.. DO UPDATE SET hits = hits + 1 WHERE hits < limit RETURNING hits``) either
takes one of the window's attempts or finds none left, atomically across every process
sharing the database, and is committed before the check starts. So however many requests
arrive at once, no more than the limit are ever checked. A check that succeeds (or never
ran) gives its attempt back (:func:`release`): only failures stay counted.

The token endpoint is on the path of every pull, so it asks the database nothing for a
credential it already knows: :class:`BlockedKeys` keeps, per process, the keys known to be
over their limit (learnt from this process's own refusals, and refreshed from the table
every few seconds for the other processes'); a password that must really be checked
(not in the endpoint's cache) is reserved like a log-in; a bad access token (cheap to
check, impossible to guess) is counted after it failed.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import BigInteger, Integer, String, bindparam, text
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base

__all__ = [
    "BlockedKeys",
    "Limits",
    "RateLimit",
    "Refused",
    "Reservation",
    "Rule",
    "check",
    "client_ip",
    "hit",
    "key",
    "limits_of",
]


class RateLimit(Base):
    """One counter: hits of ``key`` in the window starting at ``window_start`` (epoch s)."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)  # window end (epoch s)
    hits: Mapped[int] = mapped_column(Integer, default=0)


class _Executes(Protocol):
    """A Session or a Connection."""

    def execute(self, statement: Any, parameters: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Rule:
    name: str  # the key prefix, e.g. "login-ip"
    limit: int  # counted events per window
    window_s: int


@dataclass(frozen=True)
class Limits:
    """The store's rules (``app.state.rate_limits``; tests and benches may replace it)."""

    enabled: bool = True
    # Failed log-ins (pages and POST /api/v1/auth/token), per account name and per address.
    login_account: Rule = Rule("login-acct", 10, 900)
    login_ip: Rule = Rule("login-ip", 30, 900)
    # Sign-ups (pages and POST /api/v1/accounts), every attempt, per address.
    signup_ip: Rule = Rule("signup-ip", 10, 3600)
    # Requests that send a link by e-mail (password reset, verification again), every
    # attempt, per address asking and per e-mail address.
    mail_link_ip: Rule = Rule("mail-link-ip", 10, 3600)
    mail_link_address: Rule = Rule("mail-link-addr", 3, 3600)
    # Credential failures at /token: per username (passwords only, see docs/security.md) and
    # per address (every kind of credential).
    token_account: Rule = Rule("token-acct", 20, 300)
    token_ip: Rule = Rule("token-ip", 60, 300)
    # Proxies whose X-Forwarded-For is believed (addresses or networks); empty: none.
    trusted_proxies: tuple[str, ...] = ()
    _networks: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies)
        object.__setattr__(self, "_networks", nets)

    def with_proxies(self, proxies: Iterable[str]) -> Limits:
        return replace(self, trusted_proxies=tuple(p for p in proxies if p.strip()))

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)


def limits_of(app: Any) -> Limits:
    limits = getattr(app.state, "rate_limits", None)
    if limits is None:
        proxies = getattr(app.state.settings, "trusted_proxies", "") or ""
        limits = Limits().with_proxies(proxies.split(","))
        app.state.rate_limits = limits
    return limits


# --- keys and addresses ------------------------------------------------------------------


def key(rule: Rule, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode("utf-8", "replace")).hexdigest()
    return f"{rule.name}:{digest[:40]}"


def client_ip(request: Any, limits: Limits) -> str:
    """The caller's address: the socket peer, or when that peer is a trusted proxy, the
    right-most X-Forwarded-For entry that is not itself a trusted proxy. IPv6 addresses
    count per /64 (one host usually has a whole /64)."""
    peer = request.client.host if request.client else ""
    address = peer
    if peer and limits.trusted_proxies and limits.trusted(peer):
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            address = hop
            if not limits.trusted(hop):
                break
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


# --- counting ------------------------------------------------------------------------------

_UPSERT = text(
    "INSERT INTO rate_limits (key, window_start, expires_at, hits) "
    "VALUES (:key, :start, :end, 1) "
    "ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1 "
    "RETURNING hits"
).bindparams(bindparam("start", type_=BigInteger()), bindparam("end", type_=BigInteger()))
_PRUNE = text("DELETE FROM rate_limits WHERE expires_at <= :now").bindparams(
    bindparam("now", type_=BigInteger())
)
_COUNTS = text(
    "SELECT key, hits FROM rate_limits WHERE key IN :keys AND expires_at > :now"
).bindparams(bindparam("keys", expanding=True), bindparam("now", type_=BigInteger()))
_OVER = text(
    "SELECT key, hits, expires_at FROM rate_limits WHERE expires_at > :now AND hits >= :least"
).bindparams(bindparam("now", type_=BigInteger()))


def _window(rule: Rule, now: float) -> tuple[int, int]:
    start = int(now) // rule.window_s * rule.window_s
    return start, start + rule.window_s


def _retry_after(end: int, now: float) -> int:
    return max(1, math.ceil(end - now))


def hit(db: _Executes, rule: Rule, subject: str, *, now: float | None = None) -> int | None:
    """Count one event; the seconds to wait when this made the key reach its limit (the
    event itself was allowed), else None. Commit it even when the request fails."""
    now = time.time() if now is None else now
    start, end = _window(rule, now)
    count = int(
        db.execute(_UPSERT, {"key": key(rule, subject), "start": start, "end": end}).scalar_one()
    )
    if count == 1:
        db.execute(_PRUNE, {"now": int(now)})  # a new window: drop the ended ones
    return _retry_after(end, now) if count >= rule.limit else None


_RESERVE = text(
    "INSERT INTO rate_limits (key, window_start, expires_at, hits) "
    "VALUES (:key, :start, :end, 1) "
    "ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1 "
    "WHERE rate_limits.hits < :limit "
    "RETURNING hits"
).bindparams(bindparam("start", type_=BigInteger()), bindparam("end", type_=BigInteger()))
_RELEASE = text(
    "UPDATE rate_limits SET hits = hits - 1 WHERE key = :key AND window_start = :start AND hits > 0"
).bindparams(bindparam("start", type_=BigInteger()))


@dataclass(frozen=True)
class Reservation:
    """Attempts taken by :func:`reserve`: (key, window start) of each."""

    keys: tuple[tuple[str, int], ...] = ()


class Refused(Exception):
    """No attempt left for a key: try again in ``wait`` seconds."""

    def __init__(self, wait: int, key_: str = "") -> None:
        super().__init__(f"over the limit; try again in {wait} s")
        self.wait = wait
        self.key = key_


def reserve(
    db: _Executes, checks: Iterable[tuple[Rule, str | None]], *, now: float | None = None
) -> Reservation:
    """Take one attempt of each (rule, subject) before a password is checked, or none of
    them (Refused with the seconds to wait) when any has no attempt left. The caller
    commits at once, before checking, so other processes count it."""
    now = time.time() if now is None else now
    taken: list[tuple[str, int]] = []
    for rule, subject in checks:
        if not subject:
            continue
        start, end = _window(rule, now)
        key_ = key(rule, subject)
        params = {"key": key_, "start": start, "end": end, "limit": rule.limit}
        hits = db.execute(_RESERVE, params).scalar()
        if hits is None:
            release(db, Reservation(tuple(taken)))
            raise Refused(_retry_after(end, now), key_)
        if hits == 1:
            db.execute(_PRUNE, {"now": int(now)})  # a new window: drop the ended ones
        taken.append((key_, start))
    return Reservation(tuple(taken))


def release(db: _Executes, reservation: Reservation) -> None:
    """Give reserved attempts back (the check succeeded, or never ran)."""
    for key_, start in reservation.keys:
        db.execute(_RELEASE, {"key": key_, "start": start})


def check(
    db: _Executes, checks: Iterable[tuple[Rule, str]], *, now: float | None = None
) -> int | None:
    """Before an attempt: the seconds to wait if any (rule, subject) is at its limit."""
    now = time.time() if now is None else now
    wanted = {key(rule, subject): rule for rule, subject in checks if subject}
    if not wanted:
        return None
    rows = db.execute(_COUNTS, {"keys": sorted(wanted), "now": int(now)}).all()
    waits = [
        _retry_after(_window(wanted[k], now)[1], now) for k, hits in rows if hits >= wanted[k].limit
    ]
    return max(waits) if waits else None


# --- the token endpoint's per-process view ------------------------------------------------------


class BlockedKeys:
    """Keys known to be over their limit, with when that ends (epoch s), per process.

    Looking a key up costs a dict access; the table is re-read at most every
    ``refresh_s`` seconds so a block counted by another process arrives here too.
    """

    def __init__(self, refresh_s: float = 5.0) -> None:
        self.refresh_s = refresh_s
        self._until: dict[str, float] = {}
        self._next_refresh = 0.0
        self._lock = threading.Lock()

    def add(self, key_: str, seconds: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._until[key_] = now + seconds

    def wait(self, keys: Iterable[str], now: float | None = None) -> int | None:
        now = time.time() if now is None else now
        waits = [u - now for k in keys if (u := self._until.get(k)) is not None and u > now]
        return max(1, math.ceil(max(waits))) if waits else None

    def __bool__(self) -> bool:
        return bool(self._until)

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next_refresh

    def read_before(self) -> bool:
        """Whether the table was read since this view was made or cleared."""
        return self._next_refresh != 0.0

    def postpone(self) -> None:
        """Not due again for ``refresh_s`` (a refresh was started elsewhere)."""
        self._next_refresh = time.monotonic() + self.refresh_s

    def refresh(self, db: _Executes, rules: Iterable[Rule], now: float | None = None) -> None:
        """Replace the view with the table's keys of these rules that are over their limit."""
        rules = list(rules)
        self._next_refresh = time.monotonic() + self.refresh_s
        now = time.time() if now is None else now
        limits = {r.name: r.limit for r in rules}
        rows = db.execute(_OVER, {"now": int(now), "least": min(limits.values())}).all()
        fresh = {
            k: float(expires)
            for k, hits, expires in rows
            if hits >= limits.get(k.partition(":")[0], math.inf)
        }
        with self._lock:
            self._until = fresh

    def clear(self) -> None:
        with self._lock:
            self._until.clear()
            self._next_refresh = 0.0


# --- the policies, as the routes use them -------------------------------------------------------


def login_checks(request: Any, login: str) -> list[tuple[Rule, str | None]]:
    """What a log-in attempt counts against: its account name and its address."""
    limits = limits_of(request.app)
    if not limits.enabled:
        return []
    return [
        (limits.login_account, login.strip() or None),
        (limits.login_ip, client_ip(request, limits)),
    ]


def signup_wait(db: _Executes, request: Any) -> int | None:
    """Count a sign-up attempt from this address; seconds to wait when over the limit."""
    limits = limits_of(request.app)
    if not limits.enabled:
        return None
    ip = client_ip(request, limits)
    wait = check(db, [(limits.signup_ip, ip)])
    if wait is None:
        hit(db, limits.signup_ip, ip)
    return wait


def mail_link_wait(db: _Executes, request: Any, address: str) -> int | None:
    """Count a request for a link by e-mail from this client for this address; seconds to
    wait when over the limit (the answer must not say whether the address has an account,
    so it is counted whether or not it has one)."""
    limits = limits_of(request.app)
    if not limits.enabled:
        return None
    ip = client_ip(request, limits)
    checks = [(limits.mail_link_ip, ip), (limits.mail_link_address, address)]
    wait = check(db, checks)
    if wait is None:
        for rule, subject in checks:
            if subject:
                hit(db, rule, subject)
    return wait


def _token_login(username: str, password: str, unguessable: Callable[[str], bool]) -> str | None:
    """The account name a /token credential is a password for; None for the store's tokens
    and for names whose passwords are tokens (license keys, the sync credential: the caller's
    ``unguessable``): those are not guessable, and counting them per name would let anyone
    lock a customer's CI out by sending bad passwords in its name."""
    from store import security

    name = username.strip().lower()
    if not name or password.startswith(tuple(security.TOKEN_PREFIXES.values())):
        return None
    if unguessable(name):
        return None
    return name


class TokenGuard:
    """The token endpoint's limits: a dict lookup before credentials are verified, the
    table written only on failure (see the module docstring)."""

    def __init__(self, limits: Limits, unguessable: Callable[[str], bool]) -> None:
        self.limits = limits
        self.unguessable = unguessable
        self.blocked = BlockedKeys()

    def keys(self, request: Any, username: str, password: str) -> tuple[str, str | None]:
        ip_key = key(self.limits.token_ip, client_ip(request, self.limits))
        login = _token_login(username, password, self.unguessable)
        return ip_key, key(self.limits.token_account, login) if login else None

    def wait(
        self,
        db_connect: Any,
        request: Any,
        username: str,
        password: str,
        later: Callable[[Callable[[], None]], None] | None = None,
    ) -> int | None:
        """Seconds to wait before this credential may be tried, or None (no DB access but
        a refresh every few seconds).

        ``later`` runs a function off the event loop without waiting for it: given it,
        every refresh but the first is made that way and this request is answered from the
        view as it is (a few seconds old already). A read on the event loop held every
        request of the process for its round trips, tens of milliseconds on a busy
        database server."""
        if not self.limits.enabled:
            return None
        if self.blocked.due():
            if later is not None and self.blocked.read_before():
                self.blocked.postpone()  # one refresh at a time
                later(lambda: self.refresh(db_connect))
            else:
                self.refresh(db_connect)
        if not self.blocked:
            return None  # the usual case: nothing is blocked, nothing to compute
        ip_key, account_key = self.keys(request, username, password)
        return self.blocked.wait((ip_key, account_key) if account_key else (ip_key,))

    def refresh(self, db_connect: Any) -> None:
        """Read the view of blocked keys again."""
        with db_connect() as conn:
            self.blocked.refresh(conn, (self.limits.token_ip, self.limits.token_account))

    def reserve(self, db_connect: Any, request: Any, username: str, password: str) -> Reservation:
        """Before a password is checked: take an attempt of the address and the account
        name in a transaction of its own (run it in a write turn), or Refused."""
        if not self.limits.enabled:
            return Reservation()
        login = _token_login(username, password, self.unguessable) or username.strip().lower()
        checks = [
            (self.limits.token_ip, client_ip(request, self.limits)),
            (self.limits.token_account, login),
        ]
        try:
            with db_connect() as conn:
                return reserve(conn, checks)
        except Refused as exc:
            self.blocked.add(exc.key, exc.wait)
            raise

    def release(self, db_connect: Any, reservation: Reservation) -> None:
        if reservation.keys:
            with db_connect() as conn:
                release(conn, reservation)

    def failed(self, db_connect: Any, request: Any, username: str, password: str) -> None:
        """Count a failed credential that was not reserved (an access token, a license, a
        malformed or empty one)."""
        if not self.limits.enabled:
            return
        ip = client_ip(request, self.limits)
        login = _token_login(username, password, self.unguessable)
        with db_connect() as conn:
            for rule, subject in ((self.limits.token_ip, ip), (self.limits.token_account, login)):
                if subject:
                    wait = hit(conn, rule, subject)
                    if wait is not None:
                        self.blocked.add(key(rule, subject), wait)


def token_guard(app: Any, unguessable: Callable[[str], bool]) -> TokenGuard:
    """The app's token guard; ``unguessable`` tells the user names whose passwords are tokens
    (the registry's credentials know them)."""
    guard = getattr(app.state, "token_guard", None)
    limits = limits_of(app)
    if guard is None or guard.limits is not limits:
        guard = TokenGuard(limits, unguessable)
        app.state.token_guard = guard
    return guard


def token_credentials(request: Any, params: Any) -> tuple[str, str] | None:
    """(username, password) of a /token request, without judging them; None when none."""
    if request.method == "POST":
        grant = params.get("grant_type")
        if grant == "password":
            return params.get("username"), params.get("password")
        if grant == "refresh_token":
            return "", params.get("refresh_token")
        return None
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=False).decode("utf-8", "replace")
    except ValueError:
        return ("", "")
    username, _, password = decoded.partition(":")
    return username, password


def too_many(wait: int, what: str) -> Any:
    """The 429 error for pages and the JSON API, with Retry-After."""
    from store.errors import TooManyRequests

    minutes = max(1, math.ceil(wait / 60))
    when = "a minute" if minutes == 1 else f"{minutes} minutes"
    return TooManyRequests(
        f"Too many {what} from here; try again in {when}.",
        headers={"Retry-After": str(wait)},
    )
