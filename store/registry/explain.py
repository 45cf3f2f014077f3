"""Why a pull or push was refused, and where to get access: the same words for the token
endpoint's 401 (which skopeo and docker print), the JSON API and the product page."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account
from store.catalog.models import Product
from store.config import Settings
from store.db import read_only_session
from store.licensing import entitlements
from store.registry.grants import Denied, Principal


def product_url(settings: Settings, repository: str) -> str:
    return f"{settings.public_url}/products/{repository}"


def explain(
    session: Session, settings: Settings, principal: Principal, denied: Denied
) -> dict[str, Any]:
    """One refusal as ``{repository, actions, reason, message, product_url}``."""
    out: dict[str, Any] = {
        "repository": denied.scope.name,
        "actions": list(denied.actions),
        "reason": denied.code,
        "message": denied.message,
        "product_url": None,
    }
    if denied.product_id is None:
        return out
    product = session.get(Product, denied.product_id)
    if product is None:
        return out
    url = product_url(settings, product.repository)
    out["product_url"] = url
    if principal.kind == "account" and principal.account_id is not None:
        account = session.get(Account, principal.account_id)
        access = entitlements.access_for(session, account, product)
        reason, message = access.reason, access.message
    elif principal.anonymous:
        reason, message = "login_required", f"Log in to pull {product.repository}."
    elif principal.kind == "robot":
        reason = "no_license"
        message = f"The robot token's organization has no license for {product.repository}."
    else:
        reason, message = "no_license", f"This credential does not cover {product.repository}."
    if product.status == "suspended":
        reason, message = "product_suspended", f"{product.repository} is suspended."
    if reason in ("publisher", "public", "entitled"):  # allowed, but the token scope is not
        reason, message = "no_access", denied.message
    out["reason"] = reason
    out["message"] = f"{message.rstrip('.')}; get access at {url}"
    return out


def explain_denials(
    factory: sessionmaker[Session], settings: Settings, principal: Principal, denied: list[Denied]
) -> list[dict[str, Any]]:
    """Every refusal explained; refusals about a product (the informative ones) first."""
    with read_only_session(factory) as session:
        reasons = [explain(session, settings, principal, d) for d in denied]
    return sorted(reasons, key=lambda r: r["product_url"] is None)
