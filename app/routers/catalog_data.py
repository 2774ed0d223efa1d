"""The embedded catalog's files over HTTP: ``GET|HEAD /catalog/data/{collection_id}/{path}``.

STAC clients (odc-stac, stackstac, GDAL's ``/vsicurl/``, QGIS) read what ``/catalog`` lists;
the asset hrefs of a local catalog are paths on the server, so ``/catalog`` publishes them
as absolute URLs of this route (``AssetLinks``) and this route serves the files, with what
those readers need: ``HEAD``, ``Accept-Ranges: bytes``, single ranges (206, ``Content-Range``),
multiple ranges (206 ``multipart/byteranges``, overlapping ones merged; over 100 ranges: the
whole file, 200), an unsatisfiable range 416 with ``Content-Range: bytes */<size>``, a
``Range`` that is not a valid bytes range ignored (the whole file, 200, as RFC 9110 lets a
server do), ``ETag`` and ``Last-Modified``, ``If-None-Match`` / ``If-Modified-Since`` (304)
and ``If-Range`` (a stale validator: the whole file). Starlette's ``FileResponse`` does the
ranges and ``If-Range``; this module adds the 304s and the leniency on bad ``Range`` values.

Which files: ``app.catalog.files`` (the files the collection's assets name, inside its
folder and the allow-list, symlinks resolved; no listing; one 404 for everything else).
Every answer says ``X-Content-Type-Options: nosniff`` and a sandboxing
``Content-Security-Policy``: an HTML or SVG asset never runs as a page of the service.
"""

import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from app.catalog import Catalog
from app.catalog.files import NOT_FOUND, data_folder, published, relative_href, served_file
from app.dependencies import SettingsDep, get_catalog
from app.errors import NotFoundError

__all__ = ["AssetLinks", "router"]

router = APIRouter()

#: Every file answer: its media type is never sniffed, and a browser shown one (an HTML or
#: SVG asset) runs nothing of it as a page of the service's origin.
_DATA_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}

#: ``bytes=first-last, ...`` as RFC 9110 spells a byte ranges specifier (spaces tolerated).
_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class AssetLinks:
    """Asset hrefs of local catalogs made absolute URLs of the data route, per request.

    Args:
        catalog: The catalog the documents come from.
        root: The STAC API root URL (``/catalog`` as the client reaches it).

    """

    def __init__(self, catalog: Catalog, root: str):
        self.catalog = catalog
        self.root = root
        self._folders: dict[str | None, Path | None] = {}

    def url(self, collection_id: str, relative: str) -> str:
        """The URL of a file of a collection's folder."""
        return f"{self.root}/data/{quote(collection_id, safe='')}/{quote(relative, safe='/')}"

    def apply(self, data: dict[str, Any], collection_id: str | None) -> dict[str, Any]:
        """Replace, in an item or collection dict, local asset hrefs by data URLs.

        Hrefs that are URLs already, or local paths outside the collection's folder, are
        left as they are.
        """
        if collection_id not in self._folders:
            self._folders[collection_id] = data_folder(self.catalog, collection_id)
        folder = self._folders[collection_id]
        if folder is None or collection_id is None:
            return data
        for asset in (data.get("assets") or {}).values():
            href = asset.get("href") if isinstance(asset, dict) else None
            relative = relative_href(href, folder) if isinstance(href, str) else None
            if relative is not None:
                asset["href"] = self.url(collection_id, relative)
        return data


def _valid_range(value: str) -> bool:
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes" or not specs:
        return False
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if match is None:
            return False
        first, last = match.groups()
        if not first and not last:
            return False
        try:  # int() refuses numbers of more than 4300 digits (sys.int_info)
            if first and last and int(last) < int(first):
                return False
            int(first or last)
        except ValueError:
            return False
    return True


class DataFileResponse(FileResponse):
    """Starlette's ``FileResponse``; a ``Range`` that is not a valid bytes range is ignored.

    Starlette answers such a header (``items=0-9``, ``bytes=9-2``) with 400; RFC 9110
    section 14.2 says a server MUST ignore a range unit it does not understand, and MAY
    ignore an invalid ranges specifier: the whole file, 200.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the file, without the ``Range`` header when it is not valid."""
        value = Headers(scope=scope).get("range")
        if value is not None and not _valid_range(value):
            headers = [(key, val) for key, val in scope["headers"] if key != b"range"]
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)


def _not_modified(request: Request, etag: str, mtime: float) -> bool:
    """Whether the client's copy is current: If-None-Match, else If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False  # not an HTTP-date: ignored (RFC 9110 13.1.3)
        if since.tzinfo is None:  # "-0000": a date-time in UTC all the same
            since = since.replace(tzinfo=UTC)
        return int(mtime) <= since.timestamp()
    return False


_DATA_PATH = "/data/{collection_id}/{path:path}"
_DATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/tiff": {}, "application/octet-stream": {}}},
    206: {"description": "The ranges asked for (`Range: bytes=...`)."},
    304: {"description": "Not modified (`If-None-Match` / `If-Modified-Since`)."},
    404: {"description": "No such file (or not one this route serves)."},
    416: {"description": "The range is beyond the end of the file."},
}


# Two routes (not one with both methods): each method its own OpenAPI operation id.
@router.head(
    _DATA_PATH,
    name="stac_data_file_head",
    summary="Headers of a file of the embedded catalog (size, ETag, ranges)",
    response_class=FileResponse,
    responses=_DATA_RESPONSES,
)
@router.get(
    _DATA_PATH,
    name="stac_data_file",
    summary="A file of the embedded catalog (COGs of /catalog's assets)",
    response_class=FileResponse,
    responses=_DATA_RESPONSES,
)
def data_file(
    request: Request,
    collection_id: Annotated[str, PathParam(description="The collection the file belongs to.")],
    path: Annotated[
        str,
        PathParam(description="The file's path in the collection's folder, e.g. `cogs/x/B04.tif`."),
    ],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: SettingsDep,
) -> Response:
    """A file that an asset of a local catalog's item or collection points at.

    The asset hrefs ``/catalog`` serves are these URLs; read them with ranges as GDAL's
    ``/vsicurl/`` does. Only files inside the collection's folder (and the allow-list of
    sources) are served; no directory listings.
    """
    folder = data_folder(catalog, collection_id)
    if folder is None:
        raise NotFoundError(NOT_FOUND)
    file, status = served_file(
        folder, path, settings.allowed_prefixes, published(catalog, collection_id)
    )
    response = DataFileResponse(file, stat_result=status, headers=_DATA_HEADERS)
    if _not_modified(request, response.headers["etag"], status.st_mtime):
        kept = {key: response.headers[key] for key in ("etag", "last-modified", "accept-ranges")}
        kept.update(_DATA_HEADERS)
        return Response(status_code=304, headers=kept)
    return response
