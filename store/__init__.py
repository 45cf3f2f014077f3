"""Store: a self-hostable software store and licensing marketplace."""

from pathlib import Path

__version__ = "0.1.0"

# Templates and migrations live beside the package in the source tree (the store is
# installed from its checkout, editable or not, and run from there or from a container
# image that carries the tree).
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
TEMPLATES_DIR = PROJECT_DIR / "templates"
MIGRATIONS_DIR = PROJECT_DIR / "migrations"
STATIC_DIR = PACKAGE_DIR / "web" / "static"
