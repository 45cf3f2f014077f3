"""Table-driven tests of scope parsing and grant decisions (pure functions, no database)."""

from __future__ import annotations

import uuid

import pytest

from store.registry.grants import ANONYMOUS, Principal, RepoFacts, decide
from store.registry.scopes import MAX_SCOPES, Scope, ScopeError, parse_scope, parse_scopes

ORG = uuid.uuid4()
OTHER_ORG = uuid.uuid4()
PRODUCT = uuid.uuid4()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:acme/app:pull", Scope("repository", "acme/app", ("pull",))),
        ("repository:acme/app:pull,push", Scope("repository", "acme/app", ("pull", "push"))),
        ("repository:acme/app:push,pull,push", Scope("repository", "acme/app", ("push", "pull"))),
        ("repository:acme/app:*", Scope("repository", "acme/app", ("*",))),
        ("repository(plugin):acme/app:pull", Scope("repository", "acme/app", ("pull",))),
        ("repository:acme/app:pull,frobnicate", Scope("repository", "acme/app", ("pull",))),
        ("repository:acme/app:", Scope("repository", "acme/app", ())),
        ("repository:a/b/c-d__e.f:pull", Scope("repository", "a/b/c-d__e.f", ("pull",))),
        ("repository:alpine:pull", Scope("repository", "alpine", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("registry:catalog:pull", Scope("registry", "catalog", ())),
    ],
)
def test_parse_scope(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repository",
        "repository:acme/app",
        ":acme/app:pull",
        "repository::pull",
        "repository:Acme/App:pull",  # names are lowercase
        "repository:acme//app:pull",
        "repository:/acme/app:pull",
        "repository:acme/app/:pull",
        "repository:acme/-app:pull",
        "repository:acme/app..x:pull",
        "repository:ns/*:pull",
        "repository:*:pull",
        "repository:acme/app:tag:pull",  # ':' is not allowed in names
        "repository:" + "a" * 256 + ":pull",
        "Repository:acme/app:pull",
        "repo sitory:acme/app:pull",
        "registry:other:*",
        "blob:acme/app:pull",
    ],
)
def test_malformed_scopes_are_rejected(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_parse_scopes_repeated_space_separated_and_duplicates() -> None:
    parsed = parse_scopes(
        [
            "repository:ns/other:pull,push repository:ns/app:pull",
            "repository:ns/app:pull",
            "repository:ns/other:pull",
            "  repository:ns/app:push  ",
            "junk",
        ]
    )
    assert parsed.scopes == (
        Scope("repository", "ns/other", ("pull", "push")),
        Scope("repository", "ns/app", ("pull", "push")),
    )
    assert [text for text, _ in parsed.invalid] == ["junk"]


def test_too_many_scopes_are_cut() -> None:
    parsed = parse_scopes([" ".join(f"repository:ns/r{i}:pull" for i in range(MAX_SCOPES + 3))])
    assert len(parsed.scopes) == MAX_SCOPES
    assert len(parsed.invalid) == 3


def _account(**kw: object) -> Principal:
    return Principal(kind="account", subject="u", account_id=uuid.uuid4(), **kw)  # type: ignore[arg-type]


def _robot(scopes: set[str]) -> Principal:
    return Principal(
        kind="robot", subject="robot", organization_id=ORG, token_scopes=frozenset(scopes)
    )


NO_PRODUCT = RepoFacts(name="acme/app", org_id=ORG)
PAID = RepoFacts(name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="published")
PAID_ENTITLED = RepoFacts(
    name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="published", entitled=True
)
PUBLIC = RepoFacts(
    name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="published", product_public=True
)
DRAFT_PUBLIC = RepoFacts(
    name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="draft", product_public=True
)
MARKED_PUBLIC = RepoFacts(name="acme/app", org_id=ORG, marked_public=True)
PAID_SUB = RepoFacts(
    name="acme/app/worker", org_id=ORG, product_id=PRODUCT, product_status="published"
)
PAID_SUB_ENTITLED = RepoFacts(**{**PAID_SUB.__dict__, "entitled": True})
PUBLIC_SUB = RepoFacts(**{**PAID_SUB.__dict__, "product_public": True})
DRAFT_ENTITLED = RepoFacts(
    name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="draft", entitled=True
)
SUSPENDED_ENTITLED = RepoFacts(
    name="acme/app", org_id=ORG, product_id=PRODUCT, product_status="suspended", entitled=True
)
# A suspended product's repository its owner had marked public (and its tiers free).
SUSPENDED_MARKED_PUBLIC = RepoFacts(
    name="acme/app",
    org_id=ORG,
    product_id=PRODUCT,
    product_status="suspended",
    product_public=True,
    marked_public=True,
)


def _role(facts: RepoFacts, role: str) -> RepoFacts:
    return RepoFacts(**{**facts.__dict__, "role": role})


PULL_PUSH = "repository:acme/app:pull,push"
ALL = "repository:acme/app:pull,push,delete"

CASES = [
    # (id, principal, facts, scope, granted actions, denial code or None)
    ("anon-unlisted-private", ANONYMOUS, NO_PRODUCT, PULL_PUSH, (), "no_access"),
    ("anon-marked-public", ANONYMOUS, MARKED_PUBLIC, PULL_PUSH, ("pull",), "push_denied"),
    # Suspending a product takes its images down, whatever the repository's visibility.
    (
        "anon-suspended-marked-public",
        ANONYMOUS,
        SUSPENDED_MARKED_PUBLIC,
        "repository:acme/app:pull",
        (),
        "no_access",
    ),
    (
        "viewer-suspended-marked-public",
        _account(),
        _role(SUSPENDED_MARKED_PUBLIC, "viewer"),
        "repository:acme/app:pull",
        ("pull",),
        None,
    ),
    (
        "anon-paid-sub-repository",
        ANONYMOUS,
        PAID_SUB,
        "repository:acme/app/worker:pull",
        (),
        "no_access",
    ),
    (
        "anon-public-sub-repository",
        ANONYMOUS,
        PUBLIC_SUB,
        "repository:acme/app/worker:pull",
        ("pull",),
        None,
    ),
    ("customer-unlisted", _account(), NO_PRODUCT, "repository:acme/app:pull", (), "no_access"),
    (
        "entitled-sub-repository",
        _account(),
        PAID_SUB_ENTITLED,
        "repository:acme/app/worker:pull",
        ("pull",),
        None,
    ),
    # Unpublished: holders keep access to the end of what they hold
    ("entitled-draft", _account(), DRAFT_ENTITLED, "repository:acme/app:pull", ("pull",), None),
    (
        "license-sub-repository",
        Principal(
            kind="license",
            subject="l",
            repositories=frozenset({"acme/app"}),
            token_scopes=frozenset({"pull"}),
        ),
        PAID_SUB,
        "repository:acme/app/worker:pull",
        ("pull",),
        None,
    ),
    ("anon-paid", ANONYMOUS, PAID, "repository:acme/app:pull", (), "no_access"),
    ("anon-public-product", ANONYMOUS, PUBLIC, "repository:acme/app:pull", ("pull",), None),
    ("anon-draft-public", ANONYMOUS, DRAFT_PUBLIC, "repository:acme/app:pull", (), "no_access"),
    ("customer-no-license", _account(), PAID, "repository:acme/app:pull", (), "no_access"),
    ("customer-entitled", _account(), PAID_ENTITLED, "repository:acme/app:pull", ("pull",), None),
    ("customer-entitled-push", _account(), PAID_ENTITLED, PULL_PUSH, ("pull",), "push_denied"),
    (
        "customer-suspended-product",
        _account(),
        SUSPENDED_ENTITLED,
        "repository:acme/app:pull",
        (),
        "no_access",
    ),
    ("viewer", _account(), _role(PAID, "viewer"), PULL_PUSH, ("pull",), "push_denied"),
    ("editor", _account(), _role(PAID, "editor"), ALL, ("pull", "push"), "push_denied"),
    ("owner", _account(), _role(PAID, "owner"), ALL, ("pull", "push", "delete"), None),
    (
        "owner-star",
        _account(),
        _role(PAID, "owner"),
        "repository:acme/app:*",
        ("pull", "push", "delete"),
        None,
    ),
    (
        "owner-pat-pull-only",
        _account(token_scopes=frozenset({"pull"})),
        _role(PAID, "owner"),
        PULL_PUSH,
        ("pull",),
        "push_denied",
    ),
    (
        "owner-pat-api-only",
        _account(token_scopes=frozenset()),
        _role(PAID, "owner"),
        PULL_PUSH,
        (),
        "token_scope",
    ),
    (
        "editor-suspended",
        _account(),
        _role(SUSPENDED_ENTITLED, "editor"),
        PULL_PUSH,
        ("pull", "push"),
        None,
    ),
    ("robot-own-namespace", _robot({"pull", "push"}), PAID, ALL, ("pull", "push"), "push_denied"),
    ("robot-push-only-scope", _robot({"push"}), PAID, PULL_PUSH, ("pull", "push"), None),
    ("robot-pull-only", _robot({"pull"}), PAID, PULL_PUSH, ("pull",), "push_denied"),
    (
        "robot-other-namespace",
        _robot({"pull", "push"}),
        RepoFacts(name="acme/app", org_id=OTHER_ORG),
        PULL_PUSH,
        (),
        "no_access",
    ),
    (
        "robot-other-paid",
        _robot({"pull", "push"}),
        RepoFacts(
            name="acme/app", org_id=OTHER_ORG, product_id=PRODUCT, product_status="published"
        ),
        PULL_PUSH,
        (),
        "no_access",
    ),
    (
        "robot-org-entitled",
        _robot({"pull"}),
        RepoFacts(
            name="acme/app",
            org_id=OTHER_ORG,
            product_id=PRODUCT,
            product_status="published",
            entitled=True,
        ),
        "repository:acme/app:pull",
        ("pull",),
        None,
    ),
    ("admin-pulls", _account(is_admin=True), PAID, PULL_PUSH, ("pull",), "push_denied"),
    (
        "sync-pulls",
        Principal(kind="sync", subject="_store-sync"),
        PAID,
        "repository:acme/app:pull",
        ("pull",),
        None,
    ),
    (
        "license-covers",
        Principal(
            kind="license",
            subject="l",
            repositories=frozenset({"acme/app"}),
            token_scopes=frozenset({"pull"}),
        ),
        PAID,
        PULL_PUSH,
        ("pull",),
        "push_denied",
    ),
    (
        "license-other-repo",
        Principal(
            kind="license",
            subject="l",
            repositories=frozenset({"acme/x"}),
            token_scopes=frozenset({"pull"}),
        ),
        PAID,
        "repository:acme/app:pull",
        (),
        "no_access",
    ),
    (
        "license-suspended",
        Principal(
            kind="license",
            subject="l",
            repositories=frozenset({"acme/app"}),
            token_scopes=frozenset({"pull"}),
        ),
        SUSPENDED_ENTITLED,
        "repository:acme/app:pull",
        (),
        "no_access",
    ),
    ("empty-actions", _account(), _role(PAID, "owner"), "repository:acme/app:", (), None),
]


@pytest.mark.parametrize(
    ("principal", "facts", "scope", "granted", "denial"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_grant_decisions(
    principal: Principal, facts: RepoFacts, scope: str, granted: tuple[str, ...], denial: str | None
) -> None:
    parsed = parse_scopes([scope])
    decision = decide(principal, parsed.scopes, {facts.name: facts})
    got = decision.granted[0].actions if decision.granted else ()
    assert got == granted
    assert (decision.denied[0].code if decision.denied else None) == denial


@pytest.mark.parametrize(
    ("principal", "granted"),
    [
        (ANONYMOUS, False),
        (_account(), False),
        (_robot({"pull", "push"}), False),
        (_account(is_admin=True), True),
        (Principal(kind="sync", subject="_store-sync"), True),
    ],
)
def test_catalog_only_for_admins_and_sync(principal: Principal, granted: bool) -> None:
    decision = decide(principal, parse_scopes(["registry:catalog:*"]).scopes, {})
    assert bool(decision.granted) is granted
    assert decision.access() == (
        [{"type": "registry", "name": "catalog", "actions": ["*"]}] if granted else []
    )


def test_several_scopes_get_everything_allowed() -> None:
    facts = {
        "acme/app": _role(PAID, "editor"),
        "other/paid": RepoFacts(
            name="other/paid", org_id=OTHER_ORG, product_id=uuid.uuid4(), product_status="published"
        ),
        "other/free": RepoFacts(name="other/free", org_id=OTHER_ORG, marked_public=True),
    }
    parsed = parse_scopes(
        ["repository:acme/app:pull,push repository:other/paid:pull", "repository:other/free:pull"]
    )
    decision = decide(_account(), parsed.scopes, facts)
    assert decision.access() == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "other/free", "actions": ["pull"]},
    ]
    assert [d.scope.name for d in decision.denied] == ["other/paid"]
