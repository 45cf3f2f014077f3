"""JSON API: publisher signing keys, signature upload, tag signing status, certification."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, Request, status

from store.accounts import service as accounts
from store.accounts.caller import (
    AdminAccount,
    Caller,
    CurrentAccount,
    bearer_secret,
    resolve_bearer_token,
)
from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.models import Product
from store.deps import DbSession, SettingsDep
from store.errors import Forbidden, NotFound, Unauthorized
from store.signing import certification, publisher_keys
from store.signing import service as signing
from store.signing.models import CertificationRequest, ContentSignature, UnsignedPushFlag
from store.signing.schemas import (
    CertificationIn,
    CertificationOut,
    DecisionIn,
    FlagOut,
    KeyIn,
    KeyOut,
    SignatureIn,
    SignatureOut,
    TagStatusOut,
)

router = APIRouter(tags=["signing"])


def _member_org(session: DbSession, account: Account, slug: str, minimum: str) -> Organization:
    org = accounts.get_organization(session, slug)
    if not accounts.has_role(session, account, org, "viewer"):
        raise NotFound(f"No organization named '{slug}'")
    accounts.require_role(session, account, org, minimum)
    return org


def _visible_product(session: DbSession, org: str, name: str, caller: Caller) -> Product:
    return catalog.get_visible_product(session, f"{org}/{name}", caller.account)


def _signature_out(sig: ContentSignature) -> SignatureOut:
    return SignatureOut(
        id=sig.id,
        repository=sig.repository,
        digest=sig.digest,
        tag=sig.tag,
        key_fingerprint=sig.key.fingerprint,
        key_label=sig.key.label,
        key_revoked_at=sig.key.revoked_at,
        created_at=sig.created_at,
        uploaded_by=sig.uploaded_by,
    )


def _request_out(request: CertificationRequest) -> CertificationOut:
    return CertificationOut(
        id=request.id,
        product=request.product.repository,
        tag=request.tag,
        digest=request.digest,
        status=request.status,
        note=request.note,
        submitted_at=request.submitted_at,
        decided_at=request.decided_at,
        certified_digest=request.certified_digest,
    )


# --- keys -----------------------------------------------------------------------------


@router.get("/orgs/{org}/signing-keys", response_model=list[KeyOut])
def list_keys(org: str, account: CurrentAccount, session: DbSession) -> object:
    """The organization's registered public keys, revoked ones included (members)."""
    return publisher_keys.list_keys(session, _member_org(session, account, org, "viewer"))


@router.post("/orgs/{org}/signing-keys", status_code=status.HTTP_201_CREATED, response_model=KeyOut)
def add_key(org: str, body: KeyIn, account: CurrentAccount, session: DbSession) -> object:
    """Register a public key (owners). Its fingerprint is the SHA-256 of the DER
    SubjectPublicKeyInfo. Never send the private key."""
    organization = _member_org(session, account, org, "owner")
    return publisher_keys.add_key(
        session, org=organization, actor=account, public_pem=body.public_pem, label=body.label
    )


@router.post("/orgs/{org}/signing-keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(org: str, key_id: uuid.UUID, account: CurrentAccount, session: DbSession) -> object:
    """Revoke a key (owners): what it signed counts as unsigned from now on."""
    organization = _member_org(session, account, org, "owner")
    return publisher_keys.revoke_key(
        session, key=publisher_keys.get_key(session, organization, key_id), actor=account
    )


# --- signatures -----------------------------------------------------------------------


def _signer(
    request: Request, session: DbSession, background: BackgroundTasks, namespace: str
) -> tuple[Organization, Account | str]:
    """Who uploads a signature: a personal token (api or push scope) of an editor of the
    namespace, or a robot token of the namespace with the push scope (for CI)."""
    secret = bearer_secret(request)
    if secret is None:
        raise Unauthorized(
            "Send a personal or robot token as 'Authorization: Bearer <token>'",
            code="authentication_required",
        )
    token = resolve_bearer_token(request, session, background, secret)
    org = accounts.get_organization(session, namespace)
    if token.kind == "robot":
        if token.organization_id != org.id or "push" not in token.scopes:
            raise Forbidden(
                f"This robot token cannot push to {namespace}", code="insufficient_scope"
            )
        return org, f"robot:{org.slug}:{token.name}"
    if token.kind != "personal" or not {"api", "push"} & set(token.scopes):
        raise Forbidden("This token needs the 'api' or 'push' scope", code="insufficient_scope")
    assert token.account is not None
    accounts.require_role(session, token.account, org, "editor")
    return org, token.account


@router.post("/signatures", status_code=status.HTTP_201_CREATED, response_model=SignatureOut)
def upload_signature(
    body: SignatureIn,
    request: Request,
    session: DbSession,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> SignatureOut:
    """Upload a signature over an image digest. The store verifies it against the
    publisher's registered keys and the repository and digest the payload names; a
    rejection (422) carries a stable `error` code saying why."""
    namespace = body.repository.strip().lower().partition("/")[0]
    org, uploader = _signer(request, session, background, namespace)
    sig = signing.upload_signature(
        session,
        org=org,
        uploader=uploader,
        repository=body.repository,
        digest=body.digest,
        payload_b64=body.payload,
        signature_b64=body.signature,
        registry_host=signing.registry_host(settings),
        tag=body.tag,
        key_fingerprint=body.key_fingerprint,
    )
    return _signature_out(sig)


@router.get("/products/{org}/{name}/tags", response_model=list[TagStatusOut])
def product_tags(org: str, name: str, caller: Caller, session: DbSession) -> list[TagStatusOut]:
    """Every tag of the product's repository with its digest and signing status."""
    product = _visible_product(session, org, name, caller)
    return [
        TagStatusOut(
            tag=t.tag,
            digest=t.digest,
            pushed_at=t.pushed_at,
            signed=t.signed,
            certified=t.certified,
            status=t.status,
            signers=t.signers,
            flagged=t.flagged,
        )
        for t in signing.tag_statuses(session, product)
    ]


@router.get("/products/{org}/{name}/signatures", response_model=list[SignatureOut])
def product_signatures(
    org: str, name: str, digest: str, caller: Caller, session: DbSession
) -> list[SignatureOut]:
    """Every recorded signature of one digest (keys revoked since included, with the time)."""
    product = _visible_product(session, org, name, caller)
    return [_signature_out(s) for s in signing.signatures_of(session, product.repository, digest)]


# --- certification --------------------------------------------------------------------


def _editable_product(session: DbSession, account: Account, org: str, name: str) -> Product:
    product = catalog.get_visible_product(session, f"{org}/{name}", account)
    if not accounts.has_role(session, account, product.organization, "viewer"):
        raise NotFound(f"No product for {org}/{name}")
    return product


@router.post(
    "/products/{org}/{name}/certification",
    status_code=status.HTTP_201_CREATED,
    response_model=CertificationOut,
)
def submit_certification(
    org: str, name: str, body: CertificationIn, account: CurrentAccount, session: DbSession
) -> CertificationOut:
    """Submit a version (tag, and its digest) of a product for certification (editors)."""
    product = _editable_product(session, account, org, name)
    request = certification.submit(
        session, actor=account, product=product, tag=body.tag, digest=body.digest
    )
    return _request_out(request)


@router.get("/products/{org}/{name}/certification", response_model=list[CertificationOut])
def product_certification(
    org: str, name: str, account: CurrentAccount, session: DbSession
) -> list[CertificationOut]:
    """The product's certification requests, newest first (members)."""
    product = _editable_product(session, account, org, name)
    return [_request_out(r) for r in certification.requests_of(session, product)]


@router.get("/admin/certification", response_model=list[CertificationOut], tags=["admin"])
def certification_queue(
    admin: AdminAccount, session: DbSession, status: str | None = "submitted"
) -> list[CertificationOut]:
    return [_request_out(r) for r in certification.queue(session, status=status or None)]


@router.post(
    "/admin/certification/{request_id}/{decision}",
    response_model=CertificationOut,
    tags=["admin"],
)
def decide_certification(
    request_id: uuid.UUID,
    decision: str,
    body: DecisionIn,
    admin: AdminAccount,
    session: DbSession,
    settings: SettingsDep,
) -> CertificationOut:
    """`approve` (the digest must be signed by an unrevoked key) or `reject` (a note is
    required)."""
    request = certification.get_request(session, request_id)
    if decision == "approve":
        request = certification.approve(
            session, actor=admin, request=request, note=body.note, settings=settings
        )
    elif decision == "reject":
        request = certification.reject(
            session, actor=admin, request=request, note=body.note, settings=settings
        )
    else:
        raise NotFound("Decide with /approve or /reject")
    return _request_out(request)


@router.get("/orgs/{org}/push-flags", response_model=list[FlagOut])
def org_flags(
    org: str, account: CurrentAccount, session: DbSession, include_resolved: bool = False
) -> list[UnsignedPushFlag]:
    """Unsigned pushes to the organization's certified products (members)."""
    organization = _member_org(session, account, org, "viewer")
    return signing.list_flags(session, org=organization, open_only=not include_resolved)
