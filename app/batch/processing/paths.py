"""Where a processing job writes: path templates, the job folder, the Zarr group.

``output.delivery`` names a folder (``s3://bucket/out``, ``/data/out``) or a template with
``<requestId>`` (the job id), ``<tileName>``, ``<outputId>`` and ``<format>`` (``tif``).
A folder means ``<folder>/<requestId>/<tileName>/<outputId>.<format>``. The job's own
folder (bookkeeping under ``_batch/``, the STAC collection) is ``<prefix>/<requestId>``,
``<prefix>`` being the template's part before its first placeholder. Zarr output is one
group per job, ``<prefix>/<requestId>/output.zarr``.
"""

from __future__ import annotations

import posixpath
import re

from app.errors import BadRequestError

__all__ = [
    "DEFAULT_TEMPLATE",
    "FORMAT",
    "job_root",
    "output_url",
    "template_of",
    "template_prefix",
    "zarr_url",
]

DEFAULT_TEMPLATE = "<requestId>/<tileName>/<outputId>.<format>"
FORMAT = "tif"
PLACEHOLDERS = ("<requestId>", "<tileName>", "<outputId>", "<format>")
_PLACEHOLDER = re.compile(r"<[^<>/]*>")


def template_of(url: str, output_type: str) -> str:
    """The path template of an output folder or template.

    Raises:
        BadRequestError: An unknown placeholder, a raster template without ``<tileName>``
            and ``<outputId>`` (tiles would overwrite each other), a Zarr template.

    """
    url = url.rstrip("/")
    found = _PLACEHOLDER.findall(url)
    unknown = [name for name in found if name not in PLACEHOLDERS]
    if unknown:
        raise BadRequestError(
            f"output.delivery: unknown placeholder {unknown[0]} (known: {', '.join(PLACEHOLDERS)})"
        )
    if not found:
        return posixpath.join(url, DEFAULT_TEMPLATE)
    if output_type == "zarr":
        raise BadRequestError(
            "output.delivery: a Zarr output is one group per job: give a folder, not a template"
        )
    if "<tileName>" not in url or "<outputId>" not in url:
        raise BadRequestError(
            "output.delivery: a path template needs <tileName> and <outputId> (one file per "
            "tile and output)"
        )
    return url


def template_prefix(template: str) -> str:
    """The folder part of a template before its first placeholder."""
    head = template.split("<", 1)[0]
    return head.rstrip("/") if head.endswith("/") else posixpath.dirname(head)


def job_root(template: str, job_id: str) -> str:
    """The job's folder: bookkeeping and the STAC collection."""
    return posixpath.join(template_prefix(template), job_id)


def output_url(template: str, job_id: str, tile_name: str, output_id: str) -> str:
    """Where one output of one tile is written."""
    return (
        template.replace("<requestId>", job_id)
        .replace("<tileName>", tile_name)
        .replace("<outputId>", output_id)
        .replace("<format>", FORMAT)
    )


def zarr_url(root: str) -> str:
    """The job's Zarr group."""
    return posixpath.join(root, "output.zarr")
