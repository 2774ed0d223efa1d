"""The FastAPI application: ``create_app(settings)`` and a module-level ``app`` for uvicorn."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.catalog import catalog_from_settings
from app.errors import TerratilerError
from app.settings import Settings


def _terratiler_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TerratilerError)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (read from the environment when omitted)."""
    settings = settings or Settings()
    app = FastAPI(
        title="terratiler",
        version=__version__,
        description="STAC + COG tiles, crops, band math and statistics for Sentinel-2.",
    )
    app.state.settings = settings
    app.state.catalog = catalog_from_settings(settings)
    app.add_exception_handler(TerratilerError, _terratiler_error)

    from app.routers import catalog as catalog_router

    app.include_router(catalog_router.router, prefix="/catalog", tags=["STAC API"])

    @app.get("/healthz", tags=["Service"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    return app


def __getattr__(name: str) -> FastAPI:
    # Lazily built so that importing app.main (tests, CLI) does not read the environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
