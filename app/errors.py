"""Engine errors: raised by catalog, stats and batch code, mapped to HTTP by the app.

The engine never imports FastAPI; each error carries the HTTP status the service answers
with, so one exception handler in ``app.main`` turns them into responses.
"""


class TerratilerError(Exception):
    """Base class of every error the engine raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequestError(TerratilerError):
    """The caller sent something invalid (a parameter, an expression, a geometry)."""

    status_code = 400


class NotFoundError(TerratilerError):
    """An unknown collection, item, search or job."""

    status_code = 404


class ConflictError(TerratilerError):
    """The action is not allowed in the current state."""

    status_code = 409


class TooLargeError(TerratilerError):
    """A request over one of the configured limits."""

    status_code = 413


class UpstreamError(TerratilerError):
    """An upstream STAC API or COG failed."""

    status_code = 502


class UpstreamTimeoutError(UpstreamError):
    """An upstream STAC API or COG did not answer in time."""

    status_code = 504


class UpstreamBusyError(UpstreamError):
    """Too many requests to an upstream already in flight: refused at once, try later."""

    status_code = 503


class BusyError(TerratilerError):
    """The service makes as many of these requests as it may at once: refused, try later."""

    status_code = 503


class ForbiddenError(TerratilerError):
    """A source outside the allow-list, or an address the service never fetches."""

    status_code = 403


class ScriptTimeoutError(TerratilerError):
    """An evalscript ran longer than its time limit (``evalscript_timeout_seconds``)."""

    status_code = 408
