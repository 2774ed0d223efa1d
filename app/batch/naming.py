"""How a batch statistics job names its per-feature files.

``id`` (the default, Sentinel Hub's): ``<id>.json``, the feature's id (the GeoPackage FID,
the integer GeoJSON ``id``, else the ``id`` column, else the row number: ``FeatureTable``).

``identifier``: ``<identifier>.json``, the feature's ``identifier`` column made file-safe
(every run of characters other than ``A-Z a-z 0-9 . _ -`` becomes ``_``, leading dots go,
at most 100 characters). The analysis refuses a job whose file has no ``identifier`` column,
a feature without one, or two features whose names would be the same file (compared
case-insensitively, as macOS and Windows file systems do): no result may replace another.
"""

from __future__ import annotations

import re
from typing import Literal

from app.batch.features import FeatureTable
from app.errors import BadRequestError

__all__ = ["NAMINGS", "Naming", "check_naming", "feature_name", "file_stem"]

Naming = Literal["id", "identifier"]
NAMINGS: tuple[str, ...] = ("id", "identifier")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 100
# Problems listed in the analysis error (the rest are counted).
_LISTED = 5


def file_stem(text: str | None) -> str | None:
    """A file-safe name made from ``text``; None when nothing usable is left."""
    if text is None:
        return None
    name = _UNSAFE.sub("_", text).lstrip(".")[:_MAX_NAME]
    return name if name.strip("_") else None


def feature_name(feature_id: int, identifier: str | None, naming: str) -> str:
    """The name (without ``.json``) of a feature's file under ``naming``.

    ``check_naming`` has accepted the job's features, so an ``identifier`` naming always
    finds a name; the id stands in only for a feature it never saw.
    """
    if naming == "identifier":
        stem = file_stem(identifier)
        if stem is not None:
            return stem
    return str(int(feature_id))


def check_naming(features: FeatureTable, naming: str) -> None:
    """Refuse features whose per-feature files could not all be named ``naming``'s way.

    Raises:
        BadRequestError: naming ``naming`` and the features (by id) that prevent it.

    """
    if naming != "identifier":
        return
    if features.identifiers is None:
        raise BadRequestError(
            "naming: 'identifier' needs an 'identifier' column in input.features "
            "(the file has none); use naming 'id'"
        )
    missing: list[int] = []
    seen: dict[str, int] = {}
    clashes: list[str] = []
    for position, feature_id in enumerate(features.ids):
        stem = file_stem(features.identifiers[position])
        if stem is None:
            missing.append(int(feature_id))
            continue
        other = seen.setdefault(stem.lower(), int(feature_id))
        if other != int(feature_id):
            clashes.append(f"features {other} and {int(feature_id)} -> '{stem}.json'")
    if missing:
        listed = ", ".join(str(i) for i in missing[:_LISTED])
        more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        raise BadRequestError(
            f"naming: 'identifier' needs an identifier for every feature; features "
            f"{listed}{more} have none usable as a file name"
        )
    if clashes:
        more = f" and {len(clashes) - _LISTED} more" if len(clashes) > _LISTED else ""
        raise BadRequestError(
            "naming: 'identifier' needs identifiers that name distinct files; "
            f"{'; '.join(clashes[:_LISTED])}{more}"
        )
