"""The queen: the swarm's coordinator (FastAPI app, store, blob files, services).

``serve(QueenSettings())`` runs it; ``create_app(settings)`` builds the ASGI app for
tests and embedding. Workers and clients talk to it over ``docs/protocol.md`` with the
messages of ``hswarm.wire`` and never import this package.
"""

from hswarm.queen.app import create_app, serve
from hswarm.queen.settings import QueenSettings

__all__ = ["QueenSettings", "create_app", "serve"]
