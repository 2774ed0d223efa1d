"""``--catalog`` and ``--data-dir`` of the ``terratiler`` commands, checked before any write.

A command that reads the catalog or the data folder takes both as options (defaulting to
``TERRATILER_CATALOG`` / ``TERRATILER_DATA_DIR``, else the built-in settings) and checks
them before it creates anything: run from the wrong folder, ``terratiler batch stats``
says which option to give instead of leaving a ``./data/terratiler.db`` and a job row
behind a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["HelpFormatter", "add_location_options", "location_settings"]

#: Exit status of a catalog / data folder that cannot be used (argparse's usage error).
USAGE_ERROR = 2
DATABASE_NAME = "terratiler.db"  # app.db.DEFAULT_DATABASE_NAME; not imported: --help stays light


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after an option's help, unless it has none or says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return action.help
        return super()._get_help_string(action)


def _setting_default(name: str) -> str:
    """What a setting is when no option gives it: the environment, else its default."""
    from app.settings import Settings

    return os.environ.get(f"TERRATILER_{name.upper()}") or str(Settings.model_fields[name].default)


def add_location_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--catalog`` and ``--data-dir`` (shown with their effective defaults)."""
    parser.add_argument(
        "--catalog",
        default=None,
        help="a folder of STAC items or a STAC API URL "
        f"(default: {_setting_default('catalog')}, from $TERRATILER_CATALOG or the settings)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the job database and batch results "
        f"(default: {_setting_default('data_dir')}, from $TERRATILER_DATA_DIR or the settings)",
    )


def _fail(option: str, message: str) -> None:
    print(f"terratiler: {option}: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def location_settings(
    args: argparse.Namespace, *, need_catalog: bool = True, need_database: bool = False
) -> Any:
    """The ``Settings`` of this machine with ``--catalog`` / ``--data-dir`` applied, checked.

    Nothing is written here: a local catalog that is not a readable folder, a data folder
    that is a file, or (``need_database``) a missing job database print one line naming
    the option and exit with status 2. A STAC API URL is not contacted.

    Args:
        args: Parsed arguments with ``catalog`` and ``data_dir``.
        need_catalog: Whether the command reads the catalog (checked when local).
        need_database: Whether the job database must exist already (``batch monitor``).

    Returns:
        The ``app.settings.Settings``.

    """
    from app.settings import Settings

    update: dict[str, Any] = {}
    if args.catalog:
        update["catalog"] = args.catalog
    if args.data_dir:
        update["data_dir"] = Path(args.data_dir)
    settings = Settings(**update)
    hint = "give --{} PATH or set TERRATILER_{}"
    if need_catalog and not (settings.catalog_is_remote or settings.catalog_is_s3):
        folder = Path(settings.catalog).resolve()
        if not folder.is_dir():
            _fail(
                "--catalog", f"no catalog folder at {folder}; {hint.format('catalog', 'CATALOG')}"
            )
        try:
            os.listdir(folder)
        except OSError as error:
            _fail("--catalog", f"cannot read {folder}: {error.strerror}")
    data_dir = Path(settings.data_dir).resolve()
    if data_dir.exists() and not data_dir.is_dir():
        _fail("--data-dir", f"{data_dir} is not a folder")
    if need_database and not settings.database_url and not (data_dir / DATABASE_NAME).is_file():
        _fail(
            "--data-dir",
            f"no job database at {data_dir / DATABASE_NAME}; {hint.format('data-dir', 'DATA_DIR')}",
        )
    return settings
