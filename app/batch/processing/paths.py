"""Where a processing job writes: path templates, the job folder, the Zarr group.

``output.delivery`` names a folder (``s3://bucket/out``, ``/data/out``) or a template with
``<requestId>`` (the job id), ``<tileName>``, ``<outputId>`` and ``<format>`` (``tif``).
A folder means ``<folder>/<requestId>/<tileName>/<outputId>.<format>``. The job's own
folder (bookkeeping under ``_batch/``, the STAC collection) is ``<prefix>/<requestId>``,
``<prefix>`` being the template's part before its first placeholder. Zarr output is one
group per job, ``<prefix>/<requestId>/output.zarr``.

A template can only name files below its prefix (which the service checks against
``batch_outputs``): no ``.``/``..`` segments, control characters, backslashes or stray
``<``/``>``; and it never reaches into another job's folder (a segment shaped like a job
id other than the job's own, ``check_output_urls``).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from app.errors import BadRequestError

__all__ = [
    "DEFAULT_TEMPLATE",
    "FORMAT",
    "JOB_ID",
    "catalog_folder",
    "check_output_urls",
    "escaping_target",
    "job_id_segments",
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
#: A job's folder is named by its id (uuid4): a path segment shaped so is a job's folder.
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
# Longest template, and longest path segment (most file systems: 255 bytes).
MAX_TEMPLATE = 1024
MAX_SEGMENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FIELD = "output.delivery"


def _segments(path: str) -> list[str]:
    """The path segments of a folder, template or URL (``s3://bucket`` is one)."""
    return path.split("://", 1)[-1].split("/")


def job_id_segments(path: str) -> list[str]:
    """The segments of ``path`` shaped like a job id (uuid4): other jobs' folders."""
    return [segment for segment in _segments(path) if JOB_ID.match(segment)]


def _check_text(url: str) -> None:
    """A folder or template names nothing above itself, nothing odd, nothing too long."""
    if len(url) > MAX_TEMPLATE:
        raise BadRequestError(f"{FIELD}: {len(url)} characters, at most {MAX_TEMPLATE}")
    if _CONTROL.search(url) or "\\" in url:
        raise BadRequestError(f"{FIELD}: control characters and backslashes are not accepted")
    segments = _segments(url)
    if any(segment in (".", "..") for segment in segments):
        raise BadRequestError(
            f"{FIELD}: '.' and '..' segments are not accepted (a template names files below "
            "its folder)"
        )
    longest = max(len(segment.encode()) for segment in segments)
    if longest > MAX_SEGMENT:
        raise BadRequestError(f"{FIELD}: a path segment of {longest} bytes, at most {MAX_SEGMENT}")
    stray = _PLACEHOLDER.sub("", url)
    for name in PLACEHOLDERS:
        stray = stray.replace(name, "")
    if "<" in stray or ">" in stray:
        raise BadRequestError(
            f"{FIELD}: '<' and '>' only in placeholders ({', '.join(PLACEHOLDERS)})"
        )


def template_of(url: str, output_type: str) -> str:
    """The path template of an output folder or template.

    Raises:
        BadRequestError: An unknown placeholder, a raster template without ``<tileName>``
            and ``<outputId>`` (tiles would overwrite each other), a Zarr template; a
            ``.``/``..`` segment, a control character or backslash, a stray ``<`` or
            ``>``, over ``MAX_TEMPLATE`` characters or a segment over ``MAX_SEGMENT``
            bytes; a job id after the first placeholder (another job's folder).

    """
    url = url.rstrip("/")
    _check_text(url)
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
    # The prefix is checked by the service (relative to batch_outputs); past it, a job id
    # can only name another job's folder (this job's id is not known yet).
    if job_id_segments(url[len(template_prefix(url)) :]):
        raise BadRequestError(f"{FIELD}: a job id in a template names another job's folder")
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


def check_output_urls(
    template: str, job_id: str, tile_names: Iterable[str], output_ids: Iterable[str]
) -> None:
    """Every file of a job lies in its own place: no other job's folder, no overlong name.

    A tile name or output id (the user's own tiles' identifiers, output ids) substituted
    into a template may spell a job id (``<tileName>`` = another job's id), or make a
    segment longer than file systems take.

    Raises:
        BadRequestError: A URL through a job id other than ``job_id``, or a segment over
            ``MAX_SEGMENT`` bytes (naming the tile and output).

    """
    prefix = template_prefix(template)
    ids = list(output_ids)
    for name in tile_names:
        for output_id in ids:
            rest = output_url(template, job_id, name, output_id)[len(prefix) :]
            segments = _segments(rest)
            if any(JOB_ID.match(s) and s.lower() != job_id.lower() for s in segments):
                raise BadRequestError(
                    f"{FIELD}: tile '{name}', output '{output_id}' would be written in "
                    "another job's folder (a path segment is a job id)"
                )
            if any(len(s.encode()) > MAX_SEGMENT for s in segments):
                raise BadRequestError(
                    f"{FIELD}: tile '{name}', output '{output_id}': a path segment over "
                    f"{MAX_SEGMENT} bytes"
                )


def catalog_folder(catalog: str) -> str | None:
    """The local catalog's folder (its source COGs: never an output), None when remote."""
    if catalog.startswith(("http://", "https://")) or "://" in catalog:
        return None
    path = Path(catalog).resolve()
    return str(path.parent if path.suffix == ".json" else path)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def escaping_target(urls: Iterable[str], folder: str, protected: Iterable[str] = ()) -> str | None:
    """The first local URL whose real path leaves ``folder`` or enters a ``protected`` one.

    None when every URL stays in place (symlinks followed; ``protected``: the catalog's).

    Templates are checked as text when a job is created; a symlink in the output folder
    (``<folder>/<tile>`` -> ``/elsewhere``), made after that, is seen only here, just
    before a tile is written. Remote URLs (``s3://``) have no symlinks: never escaping.
    """
    if "://" in folder:
        return None
    base = os.path.realpath(folder)
    guarded = [os.path.realpath(p) for p in protected]
    for url in urls:
        if "://" in url:
            continue
        real = os.path.realpath(url)
        if not _inside(real, base) or real == base or any(_inside(real, p) for p in guarded):
            return url
    return None
