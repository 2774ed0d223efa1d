"""The zonal statistics engine and the Statistical API models (no FastAPI here).

Entry points: ``compute_statistics`` (one geometry, the ``POST /statistics`` response) and
``compute_many`` (many geometries, for batch jobs); see ``app.stats.engine``.
"""

from app.stats.engine import compute_many, compute_statistics
from app.stats.models import StatisticalRequest, StatisticalResponse

__all__ = ["StatisticalRequest", "StatisticalResponse", "compute_many", "compute_statistics"]
