"""Where the operator's trust pages are written (store.web.legal serves them), and the
start-up's warning about those still missing: without the page machinery, so a worker
warns at start-up before its page routes are loaded."""

from __future__ import annotations

import logging
from pathlib import Path

from store.config import Settings

log = logging.getLogger("store.legal")
SLUGS = ("terms", "privacy", "refunds", "contact")  # store.web.legal.DOCUMENTS, in order


def path_of(settings: Settings, slug: str) -> Path:
    return settings.data_dir / "legal" / f"{slug}.md"


def missing(settings: Settings) -> list[str]:
    """The documents the operator has not written."""
    return [slug for slug in SLUGS if not path_of(settings, slug).is_file()]


def warn_if_missing(settings: Settings) -> None:
    """In production, a warning naming the trust pages still shown as placeholders."""
    gone = missing(settings)
    if settings.environment == "production" and gone:
        log.warning(
            "trust pages shown as placeholders: write %s",
            ", ".join(str(path_of(settings, slug)) for slug in gone),
        )
