"""The embedded catalog's files as HTTP clients see them: which folder, which file, which URL.

A local catalog's asset hrefs are paths on the server (``<catalog>/cogs/<item>/B04.tif``).
``/catalog`` publishes them as URLs of ``/catalog/data/{collection_id}/{path}``, ``path``
relative to the folder the collection was read from (``data_folder``): the catalog folder
for the embedded catalog, the results folder for a result collection of a processing job.
The internal ``pystac.Item`` objects keep their paths (the tiler reads the files directly);
only the HTTP representation changes.

What the route serves (``served_file``): a file an asset of the collection or of one of its
items names (``published``: what ``/catalog`` lists, never the rest of the folder: item
JSON, hidden files, a job's ``_batch/`` bookkeeping, the service's data folder and database
when the catalog folder holds them), a regular file inside that folder once every symlink
is resolved, and inside the allow-list of sources too (the tiler would read nothing else
either; a VRT document is refused as it is there). Everything else, whatever the reason, is
the same 404 without a path in it: a directory, a missing file, ``..`` or an absolute path,
a symlink leading out of the folder, a collection without a local folder.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.errors import ForbiddenError, NotFoundError
from app.security import check_source

__all__ = ["data_folder", "published", "relative_href", "served_file"]

#: The one message of every refusal: says nothing about what exists on the server.
NOT_FOUND = "no such file in the catalog's data"


def data_folder(catalog: Any, collection_id: str | None) -> Path | None:
    """The local folder a collection's files are served from, or None (nothing served).

    Backends that read a folder (``LocalCatalog``, and ``LayeredCatalog`` for its local
    layers) answer ``data_folder(collection_id)``; others (a STAC API) have no such method:
    their assets are URLs already.

    Args:
        catalog: A ``Catalog``.
        collection_id: The collection (None: an item without one, never served).

    Returns:
        The folder (absolute, symlinks resolved), or None.

    """
    method = getattr(catalog, "data_folder", None)
    if collection_id is None or method is None:
        return None
    return method(collection_id)


def published(catalog: Any, collection_id: str) -> Callable[[str], bool]:
    """Whether a local path is an asset file of the collection (``publishes``), as a test.

    Backends without ``publishes`` (a STAC API) publish no local file.

    Args:
        catalog: A ``Catalog``.
        collection_id: The collection.

    Returns:
        A function of an absolute, normalized path.

    """
    method = getattr(catalog, "publishes", None)
    if method is None:
        return lambda _path: False
    return lambda path: bool(method(collection_id, path))


def relative_href(href: str, folder: Path) -> str | None:
    """The path of a local asset href relative to ``folder``, or None when outside it.

    Purely lexical (no file system access: this runs for every asset of every item served);
    ``served_file`` checks the file itself when it is asked for.

    Args:
        href: An asset href: an absolute local path (URLs and relative hrefs give None).
        folder: The collection's data folder.

    Returns:
        A ``/``-separated relative path without ``.`` or ``..`` segments, or None.

    """
    if not href.startswith("/") or "\x00" in href:
        return None
    relative = posixpath.relpath(posixpath.normpath(href), str(folder))
    if relative == "." or relative == ".." or relative.startswith("../"):
        return None
    return relative


def served_file(
    folder: Path,
    relative: str,
    allowed: Sequence[str],
    is_published: Callable[[str], bool],
) -> tuple[Path, os.stat_result]:
    """The file ``relative`` names inside ``folder``, checked, and its ``stat``.

    Args:
        folder: The collection's data folder (absolute, resolved).
        relative: The path from the URL (already percent-decoded by the router).
        allowed: The allow-list of sources (``Settings.allowed_prefixes``).
        is_published: Whether a path is an asset file of the collection (``published``).

    Returns:
        (the resolved path, its stat): an asset's regular file inside ``folder`` and the
        allow-list.

    Raises:
        NotFoundError: For anything else, always with the same message.

    """
    parts = relative.split("/")
    if (
        not relative
        or relative.startswith("/")
        or "\x00" in relative
        or "\\" in relative
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise NotFoundError(NOT_FOUND)
    # Before any file system access: the path as /catalog lists it (normalized, lexical).
    if not is_published(os.path.join(str(folder), *parts)):
        raise NotFoundError(NOT_FOUND)
    try:
        resolved = Path(os.path.realpath(folder.joinpath(*parts)))
        if not resolved.is_relative_to(folder):
            raise NotFoundError(NOT_FOUND)
        status = resolved.stat()
        if not stat.S_ISREG(status.st_mode):
            raise NotFoundError(NOT_FOUND)
        check_source(str(resolved), allowed)
    except (OSError, ValueError, ForbiddenError):
        raise NotFoundError(NOT_FOUND) from None
    return resolved, status
