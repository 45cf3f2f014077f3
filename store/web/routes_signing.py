"""Pages: publishers' signing keys and certification requests; the admin review queue."""

from __future__ import annotations

import uuid

from fastapi import Request
from starlette.responses import Response

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.models import Product
from store.deps import DbSession, get_settings
from store.errors import NotFound, ValidationFailed
from store.signing import certification, publisher_keys
from store.signing import service as signing
from store.web import forms
from store.web.forms import Form, FormState
from store.web.routes_publisher import member_org
from store.web.routing import AdminAccount, RequiredAccount, page_router
from store.web.templating import flash, redirect, render

router = page_router()


def _member_product(session: DbSession, account: Account, org: str, name: str) -> Product:
    organization = member_org(session, account, org)
    return catalog.get_product_by_repository(session, f"{organization.slug}/{name}")


# --- signing keys ---------------------------------------------------------------------


def _keys_page(
    request: Request,
    session: DbSession,
    account: Account,
    org: Organization,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    return render(
        request,
        "signing/keys.html",
        {
            "org": org,
            "is_owner": accounts.has_role(session, account, org, "owner"),
            "keys": publisher_keys.list_keys(session, org),
            "flags": signing.list_flags(session, org=org),
            "store_url": str(request.base_url).rstrip("/"),
            "form": form,
        },
        status=status,
    )


@router.get("/publish/{org}/-/signing")
def keys_page(request: Request, org: str, session: DbSession, account: RequiredAccount) -> Response:
    """The organization's signing keys, how to sign, and unsigned pushes to certified products."""
    return _keys_page(request, session, account, member_org(session, account, org))


@router.post("/publish/{org}/-/signing/keys")
def add_key(
    request: Request, org: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    organization = member_org(session, account, org)
    return forms.submit(
        session,
        form,
        "key",
        lambda: publisher_keys.add_key(
            session,
            org=organization,
            actor=account,
            public_pem=forms.text(form, "public_pem"),
            label=forms.text(form, "label"),
        ),
        failed=lambda state, status: _keys_page(
            request, session, account, organization, state, status
        ),
        done=lambda key: forms.redirect_with(
            request,
            f"Key {key.fingerprint[:16]}… is registered.",
            f"/publish/{organization.slug}/-/signing",
        ),
    )


@router.post("/publish/{org}/-/signing/keys/{key_id}/revoke")
def revoke_key(
    request: Request, org: str, key_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    organization = member_org(session, account, org)
    key = publisher_keys.revoke_key(
        session, key=publisher_keys.get_key(session, organization, key_id), actor=account
    )
    flash(request, f"Key {key.fingerprint[:16]}… is revoked; what it signed counts as unsigned.")
    return redirect(f"/publish/{organization.slug}/-/signing")


@router.post("/publish/{org}/-/signing/flags/{flag_id}/dismiss")
def dismiss_flag(
    request: Request, org: str, flag_id: uuid.UUID, session: DbSession, account: RequiredAccount
) -> Response:
    organization = member_org(session, account, org)
    flag = signing.get_flag(session, flag_id)
    if flag.product.organization_id != organization.id:
        raise NotFound("No such flag")
    signing.dismiss_flag(session, flag=flag, actor=account)
    flash(request, f"The unsigned push of {flag.repository}:{flag.tag} is dismissed.", "info")
    return redirect(f"/publish/{organization.slug}/-/signing")


# --- certification (publishers) -------------------------------------------------------


def _certification_page(
    request: Request,
    session: DbSession,
    account: Account,
    product: Product,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    return render(
        request,
        "signing/certification.html",
        {
            "product": product,
            "org": product.organization,
            "can_edit": accounts.has_role(session, account, product.organization, "editor"),
            "tags": signing.tag_statuses(session, product),
            "requests": certification.requests_of(session, product),
            "flags": signing.list_flags(session, product=product),
            "form": form,
        },
        status=status,
    )


@router.get("/publish/{org}/{name}/certification")
def certification_page(
    request: Request, org: str, name: str, session: DbSession, account: RequiredAccount
) -> Response:
    """A product's tags with their signing status, and its certification requests."""
    product = _member_product(session, account, org, name)
    return _certification_page(request, session, account, product)


@router.post("/publish/{org}/{name}/certification")
def submit_certification(
    request: Request, org: str, name: str, session: DbSession, account: RequiredAccount, form: Form
) -> Response:
    product = _member_product(session, account, org, name)
    return forms.submit(
        session,
        form,
        "certify",
        lambda: certification.submit(
            session,
            actor=account,
            product=product,
            tag=forms.text(form, "tag"),
            digest=forms.text(form, "digest") or None,
        ),
        failed=lambda state, status: _certification_page(
            request, session, account, product, state, status
        ),
        done=lambda submitted: forms.redirect_with(
            request,
            f"{product.repository}:{submitted.tag} is submitted for certification.",
            f"/publish/{product.repository}/certification",
        ),
    )


# --- certification (administrators) ---------------------------------------------------


@router.get("/admin/certification")
def review_queue(request: Request, session: DbSession, admin: AdminAccount) -> Response:
    """Certification requests by status, and unsigned pushes to certified products."""
    status = request.query_params.get("status", "submitted").strip()
    if status not in (*certification.STATUSES, "all"):
        raise ValidationFailed("Unknown status", code="bad_filter")
    return render(
        request,
        "signing/admin_queue.html",
        {
            "requests": certification.queue(session, status=None if status == "all" else status),
            "status": status,
            "statuses": (*certification.STATUSES, "all"),
            "flags": signing.list_flags(session),
            "section": "certification",
        },
    )


def _review_page(
    request: Request,
    session: DbSession,
    review: certification.CertificationRequest,
    form: FormState = forms.NO_FORM,
    status: int = 200,
) -> Response:
    product = review.product
    return render(
        request,
        "signing/admin_review.html",
        {
            "review": review,
            "product": product,
            "signed": signing.is_signed(session, product.repository, review.digest),
            "signatures": signing.signatures_of(session, product.repository, review.digest),
            "current_digest": signing.tag_digest(session, product.repository, review.tag),
            "tags": signing.tag_statuses(session, product),
            "checklist": certification.checklist(product),
            "history": certification.requests_of(session, product),
            "form": form,
            "section": "certification",
        },
        status=status,
    )


@router.get("/admin/certification/{request_id}")
def review_page(
    request: Request, request_id: uuid.UUID, session: DbSession, admin: AdminAccount
) -> Response:
    """One request: signature status of its digest, every tag, the listing checklist."""
    return _review_page(request, session, certification.get_request(session, request_id))


@router.post("/admin/certification/{request_id}")
def decide(
    request: Request, request_id: uuid.UUID, session: DbSession, admin: AdminAccount, form: Form
) -> Response:
    review = certification.get_request(session, request_id)
    decision = forms.text(form, "decision")
    note = forms.text(form, "note")
    settings = get_settings(request)

    def act() -> object:
        if decision == "approve":
            return certification.approve(
                session, actor=admin, request=review, note=note, settings=settings
            )
        if decision == "reject":
            return certification.reject(
                session, actor=admin, request=review, note=note, settings=settings
            )
        raise ValidationFailed("Choose approve or reject")

    word = "certified" if decision == "approve" else "rejected"
    return forms.submit(
        session,
        form,
        "decide",
        act,
        failed=lambda state, status: _review_page(request, session, review, state, status),
        done=lambda _: forms.redirect_with(
            request, f"{review.product.repository}:{review.tag} is {word}.", "/admin/certification"
        ),
    )
