"""Search over store listings and hub repositories.

Importing this package installs the session listeners that keep the index in step.
"""

from store.search import indexer as _indexer
from store.search.models import SearchDocument

_indexer.install()

__all__ = ["SearchDocument"]
