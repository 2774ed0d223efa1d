"""A catalog folder on ``s3://``: the demo's layout (``collection.json`` + ``items/``).

Hosts that share no file system (Dask workers on other machines, Kubernetes pods) all read
the same catalog from object storage. The folder's STAC files are copied once, when the
catalog is built, and indexed in memory by ``LocalCatalog``; relative asset hrefs become
absolute ``s3://`` URLs, so the COGs are read from the bucket (GDAL's ``/vsis3/``, with
``s3_endpoint_url`` when it is not AWS).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from app.catalog.layered import _copy_remote
from app.catalog.local import LocalCatalog

__all__ = ["bucket_catalog"]


def bucket_catalog(href: str, storage_options: Mapping[str, Any] | None = None) -> LocalCatalog:
    """A ``LocalCatalog`` of the STAC items in the folder ``href`` on ``s3://``.

    Args:
        href: The folder holding ``collection.json`` and ``items/*.json``.
        storage_options: fsspec options (``client_kwargs.endpoint_url`` for MinIO, moto ...).

    Returns:
        The catalog, indexed in memory (the local copy is removed once read).

    Raises:
        OSError: The folder cannot be read.

    """
    folder = _copy_remote(href.rstrip("/"), dict(storage_options or {}))
    try:
        return LocalCatalog(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
