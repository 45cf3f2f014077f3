"""Signed content: publisher keys, signatures over digests, certification and push flags.

Importing this package installs the session listeners that flag unsigned pushes to
certified products (see ``store.signing.hooks``).
"""

from store.signing import hooks as _hooks

_hooks.install()
