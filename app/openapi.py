"""The OpenAPI document declares every status the service answers, in one place.

FastAPI and titiler's factories document 200 and 422; the service also answers 400, 403,
404, 413, 502 and 504 on every route (bad input, a refused source, an unknown id, a
request over a limit, an upstream failure), 401 on the writes guarded by ``api_keys``
and 409 on batch actions in the wrong state. Clients generated from the document, and
schemathesis' ``status_code_conformance`` check, need them listed: ``install`` adds them
to every operation once, when the document is first built.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The media type of the document at ``app.openapi_url`` (FastAPI writes OpenAPI 3.1); the
#: STAC landing page's ``service-desc`` link declares the same.
MEDIA_OPENAPI = "application/vnd.oai.openapi+json;version=3.1"

ERROR_SCHEMA = {
    "title": "ErrorDetail",
    "type": "object",
    "properties": {"detail": {"title": "Detail", "description": "What is wrong, and why."}},
    "required": ["detail"],
}

#: Statuses any operation may answer: the body names the parameter or limit concerned.
COMMON_ERRORS = {
    "400": "Bad input: the message names the parameter and, when one was hit, the limit "
    "(the `Settings` field).",
    "403": "A source outside `allowed_sources`, or an address the service never fetches.",
    "404": "Unknown collection, item, search or job; or nothing there (a tile outside the data).",
    "413": "The request is over a configured limit (named in the message).",
    "422": "The request does not match the schema.",
    "502": "An upstream STAC API, COG or database failed; the message names which.",
    "504": "An upstream did not answer in time.",
}

#: Statuses of some operations only, by path prefix.
PATH_ERRORS: dict[str, dict[str, str]] = {
    "/batch/": {
        "401": "`api_keys` is set and no API key was sent.",
        "409": "The action is not allowed in the job's current state (named in the message).",
    },
    "/searches/register": {"401": "`api_keys` is set and no API key was sent."},
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
    }


def add_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare the common error responses on every operation of ``document`` (in place).

    Responses an operation already documents are kept as they are.

    Args:
        document: An OpenAPI 3 document.

    Returns:
        The same document.

    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorDetail", ERROR_SCHEMA)
    for path, operations in document.get("paths", {}).items():
        extra = {
            code: text
            for prefix, errors in PATH_ERRORS.items()
            if path.startswith(prefix) or path == prefix.rstrip("/")
            for code, text in errors.items()
        }
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code, text in {**COMMON_ERRORS, **extra}.items():
                responses.setdefault(code, _error_response(text))
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` build the document with the error responses declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    servers=app.servers,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  (FastAPI's documented override)
    _serve_as_openapi_media_type(app)


def _serve_as_openapi_media_type(app: FastAPI) -> None:
    """Answer ``app.openapi_url`` as ``MEDIA_OPENAPI`` rather than ``application/json``.

    FastAPI's own handler is kept (it adds the ``root_path`` server); only the
    ``Content-Type`` changes, so the document is what ``service-desc`` says it is.
    """
    for index, route in enumerate(app.router.routes):
        if isinstance(route, Route) and route.path == app.openapi_url:
            app.router.routes[index] = Route(
                route.path,
                _with_media_type(route.endpoint, MEDIA_OPENAPI),
                methods=["GET", "HEAD"],
                include_in_schema=False,
            )
            return


def _with_media_type(
    endpoint: Callable[[Request], Awaitable[Response]], media_type: str
) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        response = await endpoint(request)
        response.headers["content-type"] = media_type
        return response

    return answer
