"""A test-only catalog whose searches take a while, so that a test can catch a tile mid-flight.

A batch processing tile begins by searching its scenes (``app.batch.processing.worker``):
with ``SlowCatalogFactory`` as the service's ``open_catalog`` every tile a Dask worker runs
takes ``seconds`` longer, long enough for a test to kill its worker (or its service, or
stop the job, or the S3 server) while it runs. Reads and writes stay the real ones.

The factory pickles by reference (this module is importable by the test's Dask workers:
they inherit the test process's ``sys.path``; a service subprocess gets ``tests`` on its
``PYTHONPATH``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SERVE_SCRIPT", "SlowCatalog", "SlowCatalogFactory", "slowed"]


class SlowCatalog:
    """A catalog that sleeps before each search and is the wrapped one otherwise."""

    def __init__(self, inner: Any, seconds: float):
        self._inner = inner
        self._seconds = seconds

    def search(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The wrapped catalog's search, ``seconds`` later."""
        time.sleep(self._seconds)
        return self._inner.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass(frozen=True)
class SlowCatalogFactory:
    """Builds a ``SlowCatalog`` over what ``inner`` builds."""

    inner: Callable[[], Any]
    seconds: float

    def __call__(self) -> SlowCatalog:
        return SlowCatalog(self.inner(), self.seconds)


def slowed(catalog_factory: Callable[[Any], Callable[[], Any]], seconds: float) -> Any:
    """``app.services.catalog_factory`` made slow: patch it in before the app is built.

    Only the workers' catalog (``open_catalog``) is slowed: the service's own catalog
    (analysis, endpoints) is built by ``base_catalog_factory`` and stays the real one.
    """

    def factory(settings: Any) -> Callable[[], Any]:
        return SlowCatalogFactory(catalog_factory(settings), seconds)

    return factory


#: ``python -c SERVE_SCRIPT PORT SECONDS``: the service under uvicorn, with slow tiles.
SERVE_SCRIPT = """
import sys, uvicorn
import app.services
from slow_catalog import slowed
app.services.catalog_factory = slowed(app.services.catalog_factory, float(sys.argv[2]))
from app.main import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
