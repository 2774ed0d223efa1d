"""Session fixtures of the pgstac STAC API peer (see ``tests/harness/pgstac.py``).

Import them into a test module (the test's folder is on ``sys.path`` under pytest's
default import mode)::

    from pgstac_fixtures import pgstac_api, pgstac_peer  # noqa: F401

and mark its tests ``@pytest.mark.pgstac``. The peer starts once per session with the
demo items of ``demo_dir`` (about 30 s on a cold machine: PostGIS and the peer virtualenv
are installed when missing). When it cannot start, the fixture FAILS with the reason: CI
installs everything through ``make test``, so a missing part is a bug, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.pgstac import HarnessError, PgstacPeer


@pytest.fixture(scope="session")
def pgstac_peer(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgstacPeer]:
    """A running stac-fastapi-pgstac peer loaded with the demo catalog's items."""
    peer = PgstacPeer(workdir=tmp_path_factory.mktemp("pgstac-peer"))
    failure: str | None = None
    try:
        peer.start()
        peer.load(demo_dir)
    except HarnessError as error:
        failure = str(error)
    if failure is not None:
        peer.stop()
        pytest.fail(f"the pgstac STAC API peer could not start: {failure}", pytrace=False)
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def pgstac_api(pgstac_peer: PgstacPeer) -> str:
    """The URL of the pgstac peer's STAC API (``http://127.0.0.1:<port>``)."""
    return pgstac_peer.url
