"""Run localstripe on 127.0.0.1:<port> without persistence: ``python localstripe_server.py PORT``.

The stock CLI binds every interface and pickles its whole store to a shared /tmp path after
each write; this launcher does neither.
"""

import sys

import localstripe.resources
from aiohttp import web
from localstripe.server import app

localstripe.resources.Store.dump_to_disk = lambda self, *a, **k: None  # type: ignore[method-assign]

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
