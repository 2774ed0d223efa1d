"""The FastAPI application: ``create_app(settings)`` and a module-level ``app`` for uvicorn."""

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from morecantile.errors import MorecantileError
from rasterio.errors import RasterioError, RasterioIOError
from rio_tiler.errors import InvalidAssetName, RioTilerError
from starlette import status
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
from titiler.core.middleware import CacheControlMiddleware

from app import __version__, openapi
from app.asgi_paths import under_any_root
from app.errors import TerratilerError
from app.expressions import check_default_preset
from app.metrics import Metrics, MetricsMiddleware
from app.middleware import (
    CRSQueryMiddleware,
    TileScaleMiddleware,
    V8BudgetMiddleware,
    ZoomRangeMiddleware,
)
from app.public_links import HostLinksMiddleware, PublicURLMiddleware
from app.request_limits import RequestLimitMiddleware, RequestLimits
from app.security import validate_allowed
from app.services import Services, configure_process
from app.settings import Settings

logger = logging.getLogger("terratiler")
STATIC_DIR = Path(__file__).parent / "static"

# rio-tiler/rasterio failures on a COG the service was allowed to read are the upstream's
# fault (502), a bad asset name is the caller's (400).
STATUS_CODES = {
    **DEFAULT_STATUS_CODES,
    InvalidAssetName: status.HTTP_400_BAD_REQUEST,
    # A zoom level or tile the tile matrix set does not have (minzoom=-3, z=64 ...).
    MorecantileError: status.HTTP_400_BAD_REQUEST,
    RasterioIOError: status.HTTP_502_BAD_GATEWAY,
    RasterioError: status.HTTP_502_BAD_GATEWAY,
}


def _terratiler_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TerratilerError)
    # A 503 (an upstream's concurrency limit reached) passes in a moment: say when to retry.
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # Python's own overflow (int(inf), 2**z as a float ...): only absurd numbers in a
    # request (zoom 10**16, a bbox of 1e300) get there.
    return JSONResponse(
        {"detail": f"a number in the request is out of range ({exc})"},
        status_code=status.HTTP_400_BAD_REQUEST,
    )


def _finite_json(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("nan", "inf"): JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    return value


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes the offending input; a body carrying NaN or Infinity
    # (as Python's json.dumps writes them) made that 422 fail to render, a 500.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": _finite_json(jsonable_encoder(exc.errors()))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error: {type(exc).__name__}"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


class _KeepConnectionOnError:
    """Outermost ASGI layer: an error after the 500 was sent does not reach the server.

    Starlette's ServerErrorMiddleware sends the 500 (``_unexpected_error``, which logs)
    and then re-raises; uvicorn answers an exception after a response by closing the
    connection, which keep-alive clients met as a reset on their next request.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; swallow what it raises once its response is complete."""
        complete = False

        async def tracked(message: Message) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if not complete:
                raise


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (read from the environment when omitted).

    The process-wide configuration (GDAL, dataset pool, PNG encoding) is set here, before
    anything opens a dataset; the app's services (``app.services.Services``) are built
    when the app starts (its lifespan) and closed when it stops.
    """
    settings = settings or Settings()
    validate_allowed(settings.allowed_prefixes)
    check_default_preset(settings.default_preset)
    configure_process(settings)
    app = FastAPI(
        lifespan=_lifespan,
        title="terratiler",
        version=__version__,
        description="STAC + COG tiles, crops, band math and statistics for Sentinel-2.",
    )
    # The middlewares are configured from the settings now; the services need a start.
    app.state.settings = settings
    app.state.services = None

    add_exception_handlers(app, STATUS_CODES)
    app.add_exception_handler(RioTilerError, _rio_tiler_error)
    app.add_exception_handler(TerratilerError, _terratiler_error)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)

    from app.routers import batch as batch_router
    from app.routers import batch_process as batch_process_router
    from app.routers import catalog as catalog_router
    from app.routers import item_animation, tiler
    from app.routers import searches as searches_router
    from app.routers import statistics as statistics_router
    from app.routers import vectors as vectors_router

    app.include_router(catalog_router.router, prefix="/catalog", tags=["STAC API"])
    app.include_router(tiler.cog_factory().router, prefix="/cog", tags=["Cloud Optimized GeoTIFF"])
    app.include_router(tiler.stac_factory().router, prefix="/stac", tags=["STAC item by URL"])
    app.include_router(tiler.item_factory().router, prefix=tiler.ITEM_PREFIX, tags=["Catalog item"])
    app.include_router(item_animation.router, tags=["Catalog item"])
    app.include_router(tiler.tms_factory().router, tags=["Tiling Schemes"])
    # /colorMaps and /colorMaps/{name} (JSON, or a PNG ramp: the viewer's legend).
    app.include_router(tiler.colormap_factory().router, tags=["ColorMaps"])
    app.include_router(statistics_router.router, tags=["Statistical API"])
    app.include_router(
        searches_router.router, prefix="/searches", tags=["Mosaics of a STAC search"]
    )
    app.include_router(batch_router.router, tags=["Batch statistics"])
    app.include_router(batch_process_router.router, tags=["Batch processing"])
    app.include_router(vectors_router.router, tags=["Vector layers"])
    openapi.install(app)

    # /healthz and /metrics are ``async def`` and do no I/O: they answer on the event loop
    # even when every worker thread is busy (e.g. waiting on a hung upstream STAC API).
    @app.get("/healthz", tags=["Service"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (no upstream is asked)."""
        return {"status": "ok", "version": __version__}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", tags=["Service"], response_class=FileResponse, include_in_schema=False)
    def viewer() -> FileResponse:
        """The map viewer: the catalog's scenes and the registered searches."""
        return FileResponse(STATIC_DIR / "index.html")

    metrics = app.state.metrics = Metrics()

    @app.get("/metrics", tags=["Service"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: requests and latency per route, open datasets."""
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    # Added first, so innermost: it sees the route the router matched.
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    if settings.cache_control:
        app.add_middleware(
            CacheControlMiddleware,
            cachecontrol=settings.cache_control,
            cachecontrol_max_http_code=400,
            # Matched on the full path: under uvicorn's --root-path too.
            exclude_path={
                under_any_root(path)
                for path in (r"/healthz", r"/metrics", r"/catalog.*", r"/batch/.*")
            },
        )
    app.add_middleware(TileScaleMiddleware)
    app.add_middleware(ZoomRangeMiddleware)
    app.add_middleware(CRSQueryMiddleware)
    app.add_middleware(V8BudgetMiddleware, seconds=settings.evalscript_timeout_seconds)
    # Wraps ServerErrorMiddleware itself, which add_middleware cannot reach.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: _KeepConnectionOnError(build_stack())  # type: ignore
    # Outside CacheControlMiddleware, so that it sees (and may narrow) what that one set.
    if settings.public_url:
        app.add_middleware(PublicURLMiddleware, public_url=settings.public_url)
    else:
        app.add_middleware(HostLinksMiddleware)
    # Added last, so outermost: a request over a size bound is refused before anything
    # else reads it.
    app.add_middleware(RequestLimitMiddleware, limits=RequestLimits.from_settings(settings))
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the app's services at startup and close them at shutdown (the one place)."""
    settings: Settings = app.state.settings
    # Sync endpoints run on anyio's worker threads: their number is how many requests read
    # and compute at once, and so what a worker's memory settles at under load
    # (bench/soak.py: REQUEST_THREADS=8 with smaller caches settled at 1 GiB, not 2.8).
    limiter = to_thread.current_default_thread_limiter()
    limiter.total_tokens = settings.request_threads
    # Off the event loop: a local catalog reads its folder.
    services = await to_thread.run_sync(Services.build, settings)
    services.start()
    app.state.services = services
    try:
        yield
    finally:
        app.state.services = None
        # The batch service waits for its drivers to leave their jobs.
        await to_thread.run_sync(services.close)


def _rio_tiler_error(request: Request, exc: Exception) -> JSONResponse:
    code = STATUS_CODES.get(type(exc), status.HTTP_400_BAD_REQUEST)
    return JSONResponse({"detail": str(exc)}, status_code=code)


def __getattr__(name: str) -> FastAPI:
    # Lazily built so that importing app.main (tests, CLI) does not read the environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
