"""The path a request's routes see, for middlewares that pick requests by path.

Behind a proxy, ``terratiler serve --root-path /tt`` makes uvicorn put the prefix in
``scope["path"]`` (``/tt/batch/statistics``; ASGI spec) and in ``scope["root_path"]``;
Starlette's router strips it again. Middlewares matching ``scope["path"]`` against
``/batch/`` or ``/searches/`` missed every request: batch uploads got ``max_body_bytes``
instead of ``batch_max_upload_mb``, batch job documents were cached publicly, presets and
search defaults were not applied.
"""

from starlette.types import Scope


def route_path(scope: Scope) -> str:
    """``scope["path"]`` without the ``root_path`` prefix (as Starlette's router matches it)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def under_any_root(pattern: str) -> str:
    """A regex of a route path that ``re.match`` finds under any root path as well.

    For titiler's ``CacheControlMiddleware``, which matches ``exclude_path`` on the full
    ``scope["path"]``; the root path is only known per request (uvicorn's ``--root-path``).
    A path with the pattern's segments deeper inside (an item named ``batch``) matches too:
    such a response is not cached, which is the safe side.
    """
    return r"(?:/[^/]+)*?" + pattern
