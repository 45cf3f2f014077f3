"""Store: a self-hostable software store and licensing marketplace."""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout when the store runs from one (editable install, tests); otherwise the
# site-packages directory the package was installed into.
PROJECT_DIR = PACKAGE_DIR.parent
STATIC_DIR = PACKAGE_DIR / "web" / "static"


def _data_dir(packaged: str, in_checkout: str) -> Path:
    """Templates or migrations: the source tree keeps them at its top, beside ``store/``; a
    wheel carries them inside the package (pyproject.toml maps the one to the other)."""
    installed = PACKAGE_DIR / packaged
    return installed if installed.is_dir() else PROJECT_DIR / in_checkout


TEMPLATES_DIR = _data_dir("_templates", "templates")
MIGRATIONS_DIR = _data_dir("_migrations", "migrations")
