"""Job files through fsspec (a local folder or ``s3://``), every one written atomically.

A reader never sees half a file: locally a file is written under a temporary name in its
folder and renamed over the target (``os.replace`` is atomic within a file system); on
an object store a single PUT (or a completed multipart upload) is atomic by itself.

The layout of a batch statistics job: the delivered folder ``<output>/<job_id>/`` holds only
results, the bookkeeping lies beside it in ``<output>/_batch/<job_id>/``
(``JobFiles.beside``)::

    <output>/<job_id>/<name>.json          one per feature, Sentinel Hub's per-feature shape
                                           (<id>.json, or <identifier>.json on request)
    <output>/<job_id>/results.parquet      the consolidated table (written when the job ends)
    <output>/_batch/<job_id>/input.<ext>   an uploaded features file, as uploaded
    .../features.parquet                   the job's features, ordered, one row group per unit
    .../parts/<unit>.parquet               the result rows of one unit
    .../units/<unit>.json                  a unit's marker, written last: the unit is finished

The bookkeeping outlives the job's end (``retry-failed`` of a PARTIAL job reruns units from
the staged features and merges into their parts) and goes when the job is deleted. Batch
processing jobs keep it inside their folder, ``<root>/_batch/`` (``JobFiles(root)``).
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["JobFiles", "Storage"]

# The name of a temporary written by ``Storage`` beside its target (``<name>.tmp-<uuid>``).
TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")


@dataclass
class Storage:
    """A file system and helpers that write atomically.

    Attributes:
        fs: The fsspec file system.
        storage_options: The options it was opened with (for Dask workers to reopen it).

    """

    fs: Any
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_url(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
        """The storage ``url`` lives on (``s3://...``, a local path, or ``http(s)://`` to read).

        Over http(s), redirects are never followed (aiohttp would by default): sources are
        handed over with their redirects already checked (``app.redirects``).
        """
        options = dict(storage_options or {}) if url.startswith("s3://") else {}
        if url.startswith(("http://", "https://")):
            options = {"allow_redirects": False}
        fs, _ = fsspec.core.url_to_fs(url, **options)
        return cls(fs, options)

    @property
    def local(self) -> bool:
        """Whether files are local (written by rename rather than by a single PUT)."""
        return isinstance(self.fs, LocalFileSystem)

    def path(self, url: str) -> str:
        """The file system's path of ``url`` (``s3://b/k`` -> ``b/k``)."""
        return self.fs._strip_protocol(url)

    def write(self, url: str, data: bytes) -> None:
        """Write one file atomically."""
        self.write_many({url: data})

    def write_many(self, files: Mapping[str, bytes]) -> None:
        """Write many files, each atomically (object stores: concurrent single PUTs)."""
        if not files:
            return
        if not self.local:
            self.fs.pipe({self.path(url): data for url, data in files.items()})
            return
        made: set[str] = set()
        for url, data in files.items():
            target = self.path(url)
            folder = os.path.dirname(target)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            try:
                with open(temporary, "wb") as file:
                    file.write(data)
                os.replace(temporary, target)
            except BaseException:
                _remove(temporary)
                raise

    @contextmanager
    def open_atomic(self, url: str) -> Any:
        """A binary file to stream into; it replaces ``url`` only when the block succeeds."""
        target = self.path(url)
        if not self.local:
            # A multipart upload becomes visible only when completed (on close).
            with self.fs.open(target, "wb") as file:
                yield file
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            with open(temporary, "wb") as file:
                yield file
            os.replace(temporary, target)
        except BaseException:
            _remove(temporary)
            raise

    def read(self, url: str) -> bytes:
        """The bytes of a file."""
        return self.fs.cat_file(self.path(url))

    def open(self, url: str, mode: str = "rb") -> IO[bytes]:
        """Open a file for reading."""
        return self.fs.open(self.path(url), mode)

    def exists(self, url: str) -> bool:
        """Whether a file exists (not from a cached listing)."""
        path = self.path(url)
        self.fs.invalidate_cache(posixpath.dirname(path))
        return self.fs.exists(path)

    def names(self, folder_url: str) -> set[str]:
        """The names of the files in a folder (fresh listing; empty if it does not exist)."""
        path = self.path(folder_url)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return set()
        return {posixpath.basename(entry.rstrip("/")) for entry in entries}

    def remove_temporaries(self, folder_urls: Iterable[str]) -> list[str]:
        """Delete the temporaries (``*.tmp-<uuid>``) a killed writer left in these folders.

        A process killed between writing a temporary and renaming it (``kill -9`` during
        consolidation) leaves it forever; nothing else ever names it. Call this only when
        no writer of these folders can be running (the lease holder, all units finished).

        Returns:
            The URLs removed.

        """
        stale = [
            join(folder, name)
            for folder in folder_urls
            for name in sorted(self.names(folder))
            if TEMPORARY.search(name)
        ]
        self.remove(stale)
        return stale

    def remove_tree(self, folder_url: str) -> None:
        """Delete a folder and everything under it (a missing folder is fine)."""
        path = self.path(folder_url)
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def remove(self, urls: Iterable[str]) -> None:
        """Delete files (missing ones are fine)."""
        for url in urls:
            try:
                self.fs.rm_file(self.path(url))
            except FileNotFoundError:
                pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def join(base: str, *parts: str) -> str:
    """Join URL / path parts with ``/`` (fsspec paths are POSIX-like everywhere)."""
    return posixpath.join(base.rstrip("/"), *parts)


@dataclass(frozen=True)
class JobFiles:
    """Where a job's files are (see the module docstring for the layout).

    Attributes:
        root: The job's folder, ``<output>/<job_id>``.
        bookkeeping: The folder of its bookkeeping files; None: ``<root>/_batch``.
    """

    root: str
    bookkeeping: str | None = None

    @classmethod
    def beside(cls, root: str) -> JobFiles:
        """The files of a job whose bookkeeping lies in ``<output>/_batch/<job_id>``."""
        parent, job_id = posixpath.split(root.rstrip("/"))
        return cls(root, join(parent, "_batch", job_id))

    @property
    def work(self) -> str:
        """The folder of the job's bookkeeping files."""
        return self.bookkeeping or join(self.root, "_batch")

    @property
    def features(self) -> str:
        """The staged features (GeoParquet-like, one row group per unit)."""
        return join(self.work, "features.parquet")

    @property
    def parts(self) -> str:
        """The folder of per-unit result tables."""
        return join(self.work, "parts")

    @property
    def units(self) -> str:
        """The folder of unit markers."""
        return join(self.work, "units")

    @property
    def results(self) -> str:
        """The consolidated results table."""
        return join(self.root, "results.parquet")

    def upload(self, extension: str) -> str:
        """Where an uploaded features file is kept."""
        return join(self.work, f"input{extension}")

    def feature(self, name: int | str) -> str:
        """The per-feature JSON, ``<name>.json`` (its id or its file-safe identifier)."""
        return join(self.root, f"{name}.json")

    def part(self, unit: int) -> str:
        """The result rows of a unit."""
        return join(self.parts, f"{unit}.parquet")

    def marker(self, unit: int) -> str:
        """The marker of a finished unit."""
        return join(self.units, f"{unit}.json")

    @property
    def folders(self) -> list[str]:
        """Every folder the job writes files in."""
        return [self.root, self.work, self.parts, self.units]
