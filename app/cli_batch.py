"""``terratiler batch stats | process | monitor``: batch jobs from the command line.

``stats`` (batch statistics) and ``process`` (batch processing along a tiling grid) submit
a job to a running service (``--service URL``, alias ``--server``; a local features file is
uploaded) or run it here (the local database and a Dask LocalCluster, or the scheduler of
``TERRATILER_DASK_SCHEDULER``), and follow it with a progress bar (features, or tiles).
``monitor`` follows a job of either kind already submitted. Exit status: 0 DONE,
3 PARTIAL, 1 FAILED / STOPPED / errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.cli_locations import HelpFormatter, add_location_options, location_settings
from app.ordering import MOSAICKING_ORDERS

__all__ = ["add_batch_commands", "build_process_request", "build_request"]

BUSY = {"CREATED", "ANALYSING", "ANALYSIS_DONE", "PROCESSING"}
EXIT_CODES = {"DONE": 0, "PARTIAL": 3}
POLL_SECONDS = 0.5
# Kept here, not imported: ``terratiler --help`` must not import the engine.
COMPOSITES = ("first", "median", "mean", "max", "min", "stack")
DATA_TYPES = ("uint8", "uint16", "float32")
NAMINGS = ("id", "identifier")  # app.batch.naming.NAMINGS
#: The REST prefix of each job kind, as the service mounts them.
PREFIXES = {"statistics": "/batch/statistics", "process": "/batch/process"}


def add_batch_commands(subparsers: Any) -> None:
    """Add ``batch stats | process | monitor`` to the ``terratiler`` command's subparsers."""
    batch = subparsers.add_parser(
        "batch",
        help="batch statistics and processing jobs (run or submit, follow)",
        formatter_class=HelpFormatter,
    )
    commands = batch.add_subparsers(dest="batch_command", required=True)

    stats = commands.add_parser(
        "stats",
        formatter_class=HelpFormatter,
        help="statistics of every feature of a file over time intervals",
        description="Per-feature statistics (Sentinel Hub's Statistical API) of a features "
        "file, as a batch job: results under OUT/<job_id>/ (one JSON per feature and "
        "results.parquet).",
    )
    stats.add_argument("features", help="GeoPackage, GeoJSON or GeoParquet (path or s3:// URL)")
    stats.add_argument(
        "--expression",
        "-e",
        action="append",
        default=[],
        help="an output: NAME=EXPR, EXPR or a preset (ndvi, ndwi, ndmi); repeatable",
    )
    stats.add_argument(
        "--evalscript",
        metavar="FILE",
        help="a Sentinel Hub evalscript file: its setup()'s outputs (instead of --expression)",
    )
    stats.add_argument("--time", required=True, help="FROM/TO, e.g. 2023-04-01/2023-10-01")
    stats.add_argument("--interval", default="P1D", help="ISO 8601 duration")
    stats.add_argument(
        "--last-interval",
        choices=["SKIP", "SHORTEN", "EXTEND"],
        default="SKIP",
        help="a last interval shorter than --interval",
    )
    stats.add_argument("--out", help="output folder or s3:// prefix (default: the batch folder)")
    stats.add_argument("--collection", default="sentinel-2-l2a", help="input collection")
    stats.add_argument("--mask", default="scl-clear", help="scl-clear, none or an expression")
    stats.add_argument("--max-cloud", type=float, default=100.0, help="percent")
    stats.add_argument("--mosaicking-order", choices=MOSAICKING_ORDERS, default=None)
    stats.add_argument("--pixel-rule", choices=["exact", "center", "all_touched"], default=None)
    stats.add_argument("--percentiles", help="comma-separated, e.g. 10,50,90")
    stats.add_argument("--layer", help="layer of a multi-layer GeoPackage")
    stats.add_argument(
        "--naming",
        choices=NAMINGS,
        default="id",
        help="per-feature files: <id>.json (Sentinel Hub's) or <identifier>.json",
    )
    stats.add_argument("--workers", type=int, help="local run: Dask worker processes")
    _common(stats)
    stats.add_argument("--detach", action="store_true", help="submit, print the job id and return")
    stats.set_defaults(func=_guarded(_stats))

    _add_process(commands)

    monitor = commands.add_parser(
        "monitor",
        help="follow a batch job (statistics or processing) until it ends",
        formatter_class=HelpFormatter,
    )
    monitor.add_argument("job_id")
    _common(monitor)
    monitor.set_defaults(func=_guarded(_monitor))


def _add_process(commands: Any) -> None:
    process = commands.add_parser(
        "process",
        formatter_class=HelpFormatter,
        help="process an area along a tiling grid into one COG per tile and output",
        description="Batch processing (Sentinel Hub's Batch Processing API): cut AOI along "
        "a tiling grid, composite the scenes of the time range per tile and write "
        "OUT/<job_id>/<tile>/<output>.tif (or one Zarr group). Grids: terratiler serve's "
        "GET /batch/process/tiling-grids (0: UTM 20 km, 1: UTM 10 km, 2: UTM 100 km, "
        "3: WGS84 1 degree).",
    )
    process.add_argument(
        "aoi",
        help="the area: a GeoJSON file (geometry, Feature or FeatureCollection, any CRS "
        "named in its `crs`), or a WGS84 bbox MINX,MINY,MAXX,MAXY",
    )
    process.add_argument("--grid", required=True, help="tiling grid id (0, 1, 2, 3)")
    process.add_argument(
        "--resolution", required=True, type=float, help="pixel size in the grid's unit"
    )
    process.add_argument("--time", required=True, help="FROM/TO, e.g. 2023-06-01/2023-08-31")
    process.add_argument(
        "--output",
        "-o",
        action="append",
        default=[],
        dest="outputs",
        metavar="ID=PRESET|EXPR",
        help="an output: ID=PRESET (ndvi, ndwi, ndmi) or ID=EXPR ((nir-red)/(nir+red)), or "
        "a bare preset name; repeatable",
    )
    process.add_argument(
        "--evalscript",
        metavar="FILE",
        help="a Sentinel Hub evalscript file: its setup()'s outputs (instead of --output)",
    )
    process.add_argument("--composite", choices=COMPOSITES, default=None, help="default first")
    process.add_argument("--mask", default=None, help="scl-clear or none (default: none)")
    process.add_argument("--max-cloud", type=float, default=None, help="percent")
    process.add_argument("--order", choices=MOSAICKING_ORDERS, default=None, help="scene order")
    process.add_argument("--data-type", choices=DATA_TYPES, default=None, help="of every output")
    process.add_argument("--format", choices=["raster", "zarr"], default="raster")
    process.add_argument(
        "--create-collection",
        action="store_true",
        help="also serve the results as a collection of the service's catalog",
    )
    process.add_argument("--collection", default="sentinel-2-l2a", help="input collection")
    process.add_argument("--out", help="output folder or s3:// prefix (default: the batch folder)")
    process.add_argument("--description", help="a note kept with the job")
    process.add_argument("--workers", type=int, help="local run: Dask worker processes")
    _common(process)
    process.add_argument(
        "--detach", action="store_true", help="submit, print the job id and return"
    )
    process.set_defaults(func=_guarded(_process))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print engine errors (bad request, unknown job ...) as one line, exit status 1."""

    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from app.errors import TerratilerError

        try:
            return command(args)
        except TerratilerError as error:
            print(f"terratiler batch: {error.message}", file=sys.stderr)
        except ValidationError as error:
            print(f"terratiler batch: invalid request: {error}", file=sys.stderr)
        return 1

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service",
        "--server",
        dest="server",
        default=os.environ.get("TERRATILER_SERVER"),
        help="URL of a running terratiler service (default: run / read the job here)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TERRATILER_API_KEY"),
        help="API key of the service (default: $TERRATILER_API_KEY)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Used when the job runs (or is read) here, not with --service.
    add_location_options(parser)


# ------------------------------------------------------------------------------ request


def _output(text: str, index: int) -> tuple[str, str]:
    from app.expressions import PRESETS

    name, sep, expression = text.partition("=")
    if sep and name.strip().isidentifier():
        return name.strip(), expression.strip()
    preset = PRESETS.get(text.strip().lower())
    if preset is not None and preset.expression:
        return preset.name, preset.expression
    return ("value" if index == 0 else f"value{index}"), text.strip()


def _evalscript(path: str | None, outputs: list[str], option: str) -> str | None:
    """The text of ``--evalscript FILE``; exactly one of it and ``option`` is given."""
    if (path is None) == (not outputs):
        raise SystemExit(f"give {option} (repeatable) or --evalscript FILE, one of them")
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"--evalscript: cannot read {path} ({error})") from None


def _time_range(text: str, example: str) -> tuple[str, str]:
    start, sep, end = text.partition("/")
    if not sep or not start.strip() or not end.strip():
        raise SystemExit(f"--time: give FROM/TO, e.g. {example}")
    return start.strip(), end.strip()


def _out(text: str) -> str:
    return text if "://" in text else str(Path(text).resolve())


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The job request of ``batch stats`` arguments (features and output included)."""
    start, end = _time_range(args.time, "2023-04-01/2023-10-01")
    evalscript = _evalscript(args.evalscript, args.expression, "--expression")
    outputs = dict(_output(text, i) for i, text in enumerate(args.expression))
    data_filter: dict[str, Any] = {"maxCloudCoverage": args.max_cloud}
    if args.mosaicking_order:
        data_filter["mosaickingOrder"] = args.mosaicking_order
    aggregation: dict[str, Any] = {
        "timeRange": {"from": start, "to": end},
        "aggregationInterval": {"of": args.interval, "lastIntervalBehavior": args.last_interval},
        "mask": args.mask,
    }
    if evalscript is not None:
        aggregation["evalscript"] = evalscript
    else:
        aggregation["outputs"] = {name: {"expression": value} for name, value in outputs.items()}
    if args.pixel_rule:
        aggregation["pixelRule"] = args.pixel_rule
    features: dict[str, Any] = {"href": args.features}
    if args.layer:
        features["layer"] = args.layer
    body: dict[str, Any] = {
        "input": {
            "features": features,
            "data": [{"type": args.collection, "dataFilter": data_filter}],
        },
        "aggregation": aggregation,
    }
    if args.percentiles:
        ks = [float(k) for k in args.percentiles.split(",") if k.strip()]
        body["calculations"] = {"default": {"statistics": {"default": {"percentiles": {"k": ks}}}}}
    if args.out:
        body["output"] = _out(args.out)
    if args.naming != "id":
        body["naming"] = args.naming
    return body


def _process_output(text: str, index: int) -> tuple[str, dict[str, str]]:
    """``ID=PRESET``, ``ID=EXPR`` or a bare preset / expression -> (id, output body)."""
    from app.expressions import PRESETS

    name, sep, value = text.partition("=")
    if sep and name.strip().isidentifier():
        output_id, value = name.strip(), value.strip()
    else:
        # No id: a preset names its output, an expression is ``value``, ``value1`` ...
        value = text.strip()
        output_id = value.lower() if value.lower() in PRESETS else None
        output_id = output_id or ("value" if index == 0 else f"value{index}")
    if not value:
        raise SystemExit(f"--output {text!r}: give ID=PRESET or ID=EXPRESSION")
    if value.lower() in PRESETS:
        return output_id, {"preset": value.lower()}
    return output_id, {"expression": value}


def _bbox(text: str) -> list[float] | None:
    parts = text.split(",")
    if len(parts) != 4:
        return None
    try:
        return [float(part) for part in parts]
    except ValueError:
        return None


def read_aoi(text: str) -> dict[str, Any]:
    """``processRequest.input.bounds`` of the AOI argument: a GeoJSON file or a bbox.

    A FeatureCollection's geometries are merged into one (the union); a GeoJSON ``crs``
    member naming a CRS is passed on as ``properties.crs``.

    Args:
        text: A path to a GeoJSON file, or ``MINX,MINY,MAXX,MAXY`` in WGS84.

    Returns:
        ``{"geometry": ...}`` or ``{"bbox": [...]}``, with ``properties.crs`` when known.

    """
    bbox = _bbox(text)
    path = Path(text)
    if bbox is not None and not path.exists():
        return {"bbox": bbox}
    from app.errors import BadRequestError
    from app.input_limits import parse_json
    from app.settings import default_settings

    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SystemExit(f"aoi: cannot read {text}: {error.strerror}") from None
    try:
        # Depth-checked: a file of 100k '[' is a message, not a RecursionError.
        document = parse_json(raw, default_settings().max_json_depth, "aoi")
    except BadRequestError as error:
        raise SystemExit(f"aoi: {text} is not GeoJSON ({error.message})") from None
    geometry = _aoi_geometry(document, text)
    bounds: dict[str, Any] = {"geometry": geometry}
    crs = _member(_member(document, "crs"), "properties")
    name = _member(crs, "name")
    if isinstance(name, str):
        bounds["properties"] = {"crs": name}
    return bounds


def _member(value: Any, key: str) -> Any:
    """``value[key]`` when ``value`` is a JSON object, else None (a file may hold anything)."""
    return value.get(key) if isinstance(value, dict) else None


def _aoi_geometry(document: Any, text: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise SystemExit(f"aoi: {text} is not a GeoJSON object")
    kind = document.get("type")
    if kind == "Feature":
        return _aoi_geometry(document.get("geometry"), text)
    if kind == "FeatureCollection":
        geometries = [
            feature.get("geometry")
            for feature in document.get("features") or []
            if isinstance(feature, dict) and feature.get("geometry")
        ]
        if not geometries:
            raise SystemExit(f"aoi: {text} holds no geometry")
        if len(geometries) == 1:
            return geometries[0]
        import shapely
        import shapely.errors
        import shapely.geometry

        shapes = []
        for number, geometry in enumerate(geometries):
            try:
                shapes.append(shapely.geometry.shape(geometry))
            except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.ShapelyError):
                raise SystemExit(
                    f"aoi: {text}: feature {number} has no valid GeoJSON geometry"
                ) from None
        try:
            union = shapely.union_all(shapes)
        except shapely.errors.ShapelyError as error:
            raise SystemExit(f"aoi: {text}: the geometries cannot be merged ({error})") from None
        return shapely.geometry.mapping(union)
    if isinstance(kind, str) and "coordinates" in document or kind == "GeometryCollection":
        return document
    raise SystemExit(f"aoi: {text} is not a GeoJSON geometry, Feature or FeatureCollection")


def build_process_request(args: argparse.Namespace) -> dict[str, Any]:
    """The job request (``BatchProcessRequest`` JSON) of ``batch process`` arguments.

    Only what the user gave is set: every other field keeps the service's default.

    Args:
        args: The parsed ``terratiler batch process`` arguments.

    Returns:
        The request, Sentinel Hub Batch Processing v2's shape.

    """
    start, end = _time_range(args.time, "2023-06-01/2023-08-31")
    evalscript = _evalscript(args.evalscript, args.outputs, "--output")
    outputs: dict[str, dict[str, Any]] = {}
    for index, text in enumerate(args.outputs):
        output_id, output = _process_output(text, index)
        if output_id in outputs:
            raise SystemExit(f"--output: the id {output_id!r} is given twice")
        if args.data_type:
            output["dataType"] = args.data_type
        outputs[output_id] = output
    data_filter: dict[str, Any] = {"timeRange": {"from": start, "to": end}}
    if args.max_cloud is not None:
        data_filter["maxCloudCoverage"] = args.max_cloud
    if args.order:
        data_filter["mosaickingOrder"] = args.order
    process_request: dict[str, Any] = {
        "input": {
            "bounds": read_aoi(args.aoi),
            "data": [{"type": args.collection, "dataFilter": data_filter}],
        },
    }
    if evalscript is not None:
        process_request["evalscript"] = evalscript
        if args.data_type:
            raise SystemExit("--data-type: an evalscript's outputs take their setup()'s sampleType")
    else:
        process_request["outputs"] = outputs
    if args.composite:
        process_request["composite"] = args.composite
    if args.mask and args.mask.lower() != "none":
        process_request["mask"] = args.mask
    grid: str | int = int(args.grid) if args.grid.strip().isdigit() else args.grid.strip()
    resolution: float | int = (
        int(args.resolution) if args.resolution.is_integer() else (args.resolution)
    )
    output: dict[str, Any] = {"type": args.format}
    if args.out:
        out = _out(args.out)
        output["delivery"] = {"s3": {"url": out}} if out.startswith("s3://") else {"path": out}
    body: dict[str, Any] = {
        "processRequest": process_request,
        "input": {"type": "tiling-grid", "id": grid, "resolution": resolution},
        "output": output,
    }
    if args.create_collection:
        body["createCollection"] = True
    if args.description:
        body["description"] = args.description
    return body


# ------------------------------------------------------------------------------ follow


def _counts(view: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """(unit name, counts) of a job view: tiles of a processing job, else features."""
    progress = view.get("progress") or {}
    if "tiles" in progress:
        return "tile", progress["tiles"]
    return "feature", progress["features"]


def _follow(
    fetch: Callable[[], dict[str, Any]],
    show: bool,
    busy: set[str],
) -> dict[str, Any]:
    """Poll a job until it leaves ``busy`` states, drawing a tqdm bar of its features / tiles."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            view = fetch()
            unit, counts = _counts(view)
            if bar is None:
                bar = tqdm(
                    total=0, unit=unit, disable=not show, file=sys.stderr, dynamic_ncols=True
                )
            total = int(counts.get("total") or 0)
            processed = sum(int(counts.get(key) or 0) for key in ("done", "failed", "invalid"))
            if total and bar.total != total:
                bar.total = total
            bar.n = processed
            postfix: dict[str, Any] = {"status": view["status"], "failed": counts.get("failed", 0)}
            remaining = view.get("estimatedSecondsRemaining")
            if remaining is not None and view["status"] in busy:
                # The service's estimate (this run's pace, or the analysis' before any tile).
                postfix["eta"] = f"{float(remaining):.0f}s"
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()
            if view["status"] not in busy:
                return view
            time.sleep(POLL_SECONDS)
    finally:
        if bar is not None:
            bar.close()


def _report(view: dict[str, Any]) -> int:
    unit, counts = _counts(view)
    line = f"job {view['id']}: {view['status']}: {counts['done']} done, {counts['failed']} failed"
    if "invalid" in counts:
        line += f", {counts['invalid']} invalid"
    print(f"{line} of {counts['total']} {unit}s")
    if view.get("error"):
        print(f"error: {view['error']}")
    for failure in (view.get("failedFeatures") or [])[:10]:
        print(f"  failed {failure['id']} ({failure.get('identifier')}): {failure['error']}")
    for failure in (view.get("failedTiles") or [])[:10]:
        name = failure.get("name") or failure.get("tile") or failure.get("id")
        print(f"  failed tile {name}: {failure.get('error')}")
    if view.get("results") and unit == "feature":
        print(f"results: {view['output']}/ (results.parquet, <id>.json)")
    elif view["status"] in ("DONE", "PARTIAL"):
        print(f"results: {view['output']}/")
    return EXIT_CODES.get(view["status"], 1)


# ------------------------------------------------------------------------------ remote


class _Remote:
    """The batch API of a running service (one job kind: ``prefix``)."""

    def __init__(self, server: str, api_key: str | None, prefix: str = PREFIXES["statistics"]):
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=120.0)
        self.prefix = prefix

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The raw response of ``method prefix+path``."""
        return self.http.request(method, f"{self.prefix}{path}", **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer of ``method prefix+path``; an error status exits with its detail."""
        return self._json(method, path, self.request(method, path, **kwargs))

    def _json(self, method: str, path: str, response: Any) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise SystemExit(f"{method} {self.prefix}{path}: {response.status_code} {detail}")
        return response.json()

    def find(self, job_id: str) -> None:
        """Point ``prefix`` at the kind of ``job_id`` (statistics, else processing)."""
        for prefix in PREFIXES.values():
            self.prefix = prefix
            response = self.request("GET", f"/{job_id}")
            if response.status_code != 404:
                self._json("GET", f"/{job_id}", response)
                return
        self.prefix = PREFIXES["statistics"]
        raise SystemExit(f"batch job '{job_id}' not found on the service")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        features = body["input"]["features"]
        path = Path(features["href"])
        if "://" not in features["href"] and path.is_file():
            # A local file: upload it (the service may not see this machine's files).
            request = json.loads(json.dumps(body))
            request["input"].pop("features")
            if features.get("layer"):
                request["input"]["features"] = {"layer": features["layer"], "href": ""}
            with open(path, "rb") as file:
                return self.call(
                    "POST",
                    "",
                    data={"request": json.dumps(request)},
                    files={"features": (path.name, file)},
                )
        return self.call("POST", "", json=body)


# ----------------------------------------------------------------------------- commands


def _submit(remote: _Remote, job: dict[str, Any], args: argparse.Namespace) -> int:
    """Start a job created on the service, then follow it (or print its id: ``--detach``)."""
    remote.call("POST", f"/{job['id']}/start")
    print(f"job {job['id']} submitted to {args.server}", file=sys.stderr)
    if args.detach:
        print(job["id"])
        return 0
    view = _follow(lambda: remote.call("GET", f"/{job['id']}"), not args.no_progress, BUSY)
    return _report(view)


def _stats(args: argparse.Namespace) -> int:
    body = build_request(args)
    if args.server:
        remote = _Remote(args.server, args.api_key)
        return _submit(remote, remote.create(body), args)
    from app.batch import BatchStatisticalRequest

    # Checked before the service (and its database) exists: a bad run writes nothing.
    request = BatchStatisticalRequest.model_validate(body)
    return _run_here(args, lambda service: service.create(request))


def _process(args: argparse.Namespace) -> int:
    body = build_process_request(args)
    if args.server:
        remote = _Remote(args.server, args.api_key, PREFIXES["process"])
        return _submit(remote, remote.call("POST", "", json=body), args)
    from app.batch.processing.models import BatchProcessRequest

    request = BatchProcessRequest.model_validate(body)
    return _run_here(args, lambda service: service.create_process(request))


def _local_service(
    args: argparse.Namespace,
    workers: int | None = None,
    need_database: bool = False,
    **kwargs: Any,
) -> Any:
    """A ``BatchService`` of this machine's settings (``TERRATILER_*``, the options).

    ``--catalog`` and ``--data-dir`` are checked (``location_settings``) before the service
    (and its database) is made.
    """
    settings = location_settings(args, need_catalog=not need_database, need_database=need_database)
    from app.batch import BatchService
    from app.services import catalog_factory, configure_process

    if workers:
        settings = settings.model_copy(update={"batch_workers": workers})
    # Before the LocalCluster starts: its workers inherit GDAL's environment.
    configure_process(settings)
    return BatchService(settings, catalog_factory(settings), takeover=False, **kwargs)


def _run_here(args: argparse.Namespace, create: Callable[[Any], dict[str, Any]]) -> int:
    # The operator runs this: their files and folders need no allow-list.
    service = _local_service(args, args.workers, check_sources=False)
    try:
        job = create(service)
        print(f"job {job['id']}: output {job['output']}", file=sys.stderr)
        service.start(job["id"])
        try:
            view = _follow(lambda: service.get(job["id"]), not args.no_progress, BUSY)
        except KeyboardInterrupt:
            service.stop(job["id"])
            print(f"job {job['id']} stopped; a service's start action resumes it", file=sys.stderr)
            return 1
        return _report(view)
    finally:
        service.close()


def _monitor(args: argparse.Namespace) -> int:
    show = not args.no_progress
    running = {"ANALYSING", "PROCESSING"}
    if args.server:
        remote = _Remote(args.server, args.api_key)
        remote.find(args.job_id)
        return _report(_follow(lambda: remote.call("GET", f"/{args.job_id}"), show, running))
    service = _local_service(args, need_database=True)
    try:
        return _report(_follow(lambda: service.get(args.job_id), show, running))
    finally:
        service.close()
