"""A STAC item by URL or path (``/stac?url=``): fetched, parsed, and refused clearly if not one.

Users point ``url=`` at whatever the allow-list lets through: a folder, a COG, a
FeatureCollection, a JSON array, a file that is not JSON at all. Each of these used to
escape as a Python error (IsADirectoryError, UnicodeDecodeError, JSONDecodeError,
STACTypeError ...) and a 500. Here they become a 4xx naming the problem, and failures of
the server holding the item a 502/504; messages show the ``url`` as the user gave it,
never the resolved path on this machine.
"""

import json
from typing import Any

import pystac
from rio_tiler.io import stac as rio_stac
from rio_tiler.io.stac import fetch

from app.errors import BadRequestError, NotFoundError, UpstreamError, UpstreamTimeoutError

_NOT_AN_ITEM = "url: '{shown}' is not a STAC item ({why})"


def fetch_item(source: str, shown: str, **fetch_options: Any) -> pystac.Item:
    """The STAC item at ``source`` (already checked against the allow-list).

    Args:
        source: The normalized path or URL, as ``app.security.check_source`` returned it.
        shown: The ``url`` as the user gave it, for messages (no resolved server paths).
        **fetch_options: Options of rio-tiler's ``fetch`` (httpx / boto3 options).

    Returns:
        The item, its self href ``source``.

    Raises:
        BadRequestError: A folder, not JSON, not UTF-8, or JSON that is not a STAC Item.
        NotFoundError: No file at a local path; the server answered 404 or 410.
        UpstreamError: The server holding the item failed or answered another error.
        UpstreamTimeoutError: The server holding the item did not answer in time.

    """
    document = _document(source, shown, fetch_options)
    if not isinstance(document, dict):
        why = f"JSON {type(document).__name__}, not an object"
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why=why))
    kind = document.get("type")
    if kind != "Feature":
        why = f"its type is {kind!r}, a STAC Item's is 'Feature'"
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why=why))
    try:
        return pystac.Item.from_dict(document, href=source, preserve_dict=False)
    except Exception as error:  # pystac fails on a missing or mistyped field in many ways
        why = f"{type(error).__name__}: {error}"
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why=why)) from None


def _document(source: str, shown: str, fetch_options: dict[str, Any]) -> Any:
    # Over http(s), rio-tiler's fetch uses its own httpx (today the httpx2 fork), which
    # follows no redirect: one answered now (after app.redirects found none) is an error.
    httpx = rio_stac.httpx
    try:
        return fetch(source, **fetch_options)
    except IsADirectoryError:
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why="a folder")) from None
    except FileNotFoundError:
        raise NotFoundError(f"url: no file at '{shown}'") from None
    except UnicodeDecodeError:
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why="not UTF-8 text")) from None
    except json.JSONDecodeError as error:
        why = f"not JSON: {error}"
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why=why)) from None
    except RecursionError:
        # rio-tiler's fetch json-decodes the whole document: nested too deep was a 500.
        why = "JSON nested too deep"
        raise BadRequestError(_NOT_AN_ITEM.format(shown=shown, why=why)) from None
    except httpx.TimeoutException:
        raise UpstreamTimeoutError(f"url: '{shown}' did not answer in time") from None
    except httpx.HTTPStatusError as error:
        code = error.response.status_code
        if code in (404, 410):
            raise NotFoundError(f"url: '{shown}' answered {code}: no STAC item there") from None
        raise UpstreamError(f"url: '{shown}' answered {code}") from None
    except (httpx.HTTPError, OSError) as error:
        # Connection failures, and local files that cannot be read (permissions, I/O).
        raise UpstreamError(f"url: '{shown}' could not be read ({type(error).__name__})") from None
