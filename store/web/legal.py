"""The operator's trust pages: Terms, Privacy, Refund policy, Contact and imprint.

The operator writes them as Markdown files in ``<data dir>/legal/`` (``terms.md``,
``privacy.md``, ``refunds.md``, ``contact.md``). A missing file is served as a placeholder
that says so plainly, and a production start-up logs a warning naming the missing files.
Files are read on each request (they are small and rarely read), so an edit shows at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from markupsafe import Markup
from starlette.responses import Response

from store.catalog import markdown
from store.config import Settings
from store.errors import NotFound
from store.web.legal_files import SLUGS, missing, path_of, warn_if_missing
from store.web.routing import page_router
from store.web.templating import render

__all__ = ["DOCUMENTS", "SLUGS", "missing", "path_of", "router", "warn_if_missing"]

router = page_router()
MAX_BYTES = 200_000


@dataclass(frozen=True)
class Document:
    slug: str
    title: str
    placeholder: str


DOCUMENTS = {
    d.slug: d
    for d in (
        Document(
            "terms",
            "Terms of service",
            "The operator of this store has not published its terms of service yet.\n\n"
            "Until it does, each product is licensed under its publisher's terms (linked "
            "on the product page as the EULA, where there is one). Ask the operator (see "
            "[Contact](/legal/contact)) for the terms that apply before you buy.",
        ),
        Document(
            "privacy",
            "Privacy policy",
            "The operator of this store has not published its privacy policy yet.\n\n"
            "The store keeps what it needs to run your account: your username, e-mail "
            "address, display name, a hash of your password, your purchases and licenses, "
            "and the pulls made with your tokens. Card details go to the payment provider "
            "and never reach the store.",
        ),
        Document(
            "refunds",
            "Refund policy",
            "The operator of this store has not published its refund policy yet.\n\n"
            "Ask the operator (see [Contact](/legal/contact)) before you buy if you need "
            "to know whether and how a purchase can be refunded. A refund ends the access "
            "it paid for.",
        ),
        Document(
            "contact",
            "Contact and imprint",
            "The operator of this store has not published its contact details and imprint "
            "yet.\n\nEach product page names its publisher, with the publisher's website "
            "and support address where the publisher gave them.",
        ),
    )
}


def text_of(settings: Settings, slug: str) -> tuple[str, bool]:
    """The Markdown of a document and whether the operator wrote it."""
    document = DOCUMENTS[slug]
    path = path_of(settings, slug)
    try:
        raw = path.read_bytes()[:MAX_BYTES]
    except OSError:
        return document.placeholder, False
    return raw.decode("utf-8", "replace"), True


@router.get("/legal/{slug}")
def legal_page(request: Request, slug: str) -> Response:
    """Terms, privacy, refunds, contact: as the operator wrote them, or a placeholder."""
    document = DOCUMENTS.get(slug)
    if document is None:
        raise NotFound("No such page")
    text, written = text_of(request.app.state.settings, slug)
    return render(
        request,
        "legal/page.html",
        {
            "document": document,
            "body": Markup(markdown.render(text)),  # noqa: S704  (sanitised by markdown.render)
            "written": written,
        },
    )
