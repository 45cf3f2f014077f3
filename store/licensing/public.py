"""Public, unauthenticated license routes: the signing keys (JWKS) and the revocation list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from store.deps import DbSession, SettingsDep
from store.keys.service import KeyRing
from store.licensing import service
from store.licensing.schemas import RevocationListOut

router = APIRouter(tags=["licenses"])

JWKS_MAX_AGE = 300
REVOCATIONS_MAX_AGE = 60


def get_keyring(request: Request) -> KeyRing:
    keyring: KeyRing = request.app.state.keyring
    return keyring


Keyring = Annotated[KeyRing, Depends(get_keyring)]


def lic_response(filename: str, text: str) -> Response:
    return Response(
        text,
        media_type="application/x-store-license; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/.well-known/jwks.json",
    response_class=JSONResponse,
    responses={200: {"content": {"application/jwk-set+json": {"schema": {"type": "object"}}}}},
)
def jwks(session: DbSession, keyring: Keyring, settings: SettingsDep) -> Response:
    """The public keys that verify licenses (every license key that is not retired)."""
    return JSONResponse(
        service.jwks(session, keyring, settings),
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
        media_type="application/jwk-set+json",
    )


@router.get("/licenses/revocations", response_model=RevocationListOut)
def revocations(
    request: Request, session: DbSession, keyring: Keyring, settings: SettingsDep
) -> Response:
    """The signed list of revoked licenses, for offline verifiers to cache until
    ``next_update``. JSON by default (plain fields plus ``jws``); the bare JWS with
    ``Accept: application/jose``."""
    signed = service.revocation_list(session, keyring, settings)
    headers = {"Cache-Control": f"public, max-age={REVOCATIONS_MAX_AGE}"}
    if "application/jose" in request.headers.get("accept", ""):
        return Response(signed.jws, media_type="application/jose", headers=headers)
    body: dict[str, Any] = {**signed.claims, "jws": signed.jws}
    return JSONResponse(RevocationListOut.model_validate(body).model_dump(), headers=headers)
