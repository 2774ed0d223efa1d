"""``terratiler batch stats | monitor``: batch statistics from the command line.

``stats`` submits a job to a running service (``--server URL``; a local features file is
uploaded) or runs it here (the local database and a Dask LocalCluster, or the scheduler
of ``TERRATILER_DASK_SCHEDULER``), and follows it with a progress bar. ``monitor`` follows
a job already submitted. Exit status: 0 DONE, 3 PARTIAL, 1 FAILED / STOPPED / errors.
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

from app.ordering import MOSAICKING_ORDERS

__all__ = ["add_batch_commands", "build_request"]

BUSY = {"CREATED", "ANALYSING", "ANALYSIS_DONE", "PROCESSING"}
EXIT_CODES = {"DONE": 0, "PARTIAL": 3}
POLL_SECONDS = 0.5


def add_batch_commands(subparsers: Any) -> None:
    """Add ``batch stats`` and ``batch monitor`` to the ``terratiler`` command's subparsers."""
    batch = subparsers.add_parser("batch", help="batch statistics jobs (run or submit, follow)")
    commands = batch.add_subparsers(dest="batch_command", required=True)

    stats = commands.add_parser(
        "stats",
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
        required=True,
        help="an output: NAME=EXPR, EXPR or a preset (ndvi, ndwi, ndmi); repeatable",
    )
    stats.add_argument("--time", required=True, help="FROM/TO, e.g. 2023-04-01/2023-10-01")
    stats.add_argument("--interval", default="P1D", help="ISO 8601 duration (default P1D)")
    stats.add_argument("--last-interval", choices=["SKIP", "SHORTEN", "EXTEND"], default="SKIP")
    stats.add_argument("--out", help="output folder or s3:// prefix (default: the batch folder)")
    stats.add_argument("--collection", default="sentinel-2-l2a")
    stats.add_argument("--mask", default="scl-clear", help="scl-clear, none or an expression")
    stats.add_argument("--max-cloud", type=float, default=100.0, help="percent")
    stats.add_argument("--mosaicking-order", choices=MOSAICKING_ORDERS, default=None)
    stats.add_argument("--pixel-rule", choices=["exact", "center", "all_touched"], default=None)
    stats.add_argument("--percentiles", help="comma-separated, e.g. 10,50,90")
    stats.add_argument("--layer", help="layer of a multi-layer GeoPackage")
    stats.add_argument("--workers", type=int, help="local run: Dask worker processes")
    _common(stats)
    stats.add_argument("--detach", action="store_true", help="submit, print the job id and return")
    stats.set_defaults(func=_guarded(_stats))

    monitor = commands.add_parser("monitor", help="follow a batch job until it ends")
    monitor.add_argument("job_id")
    _common(monitor)
    monitor.set_defaults(func=_guarded(_monitor))


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
        "--server",
        default=os.environ.get("TERRATILER_SERVER"),
        help="URL of a running terratiler service (default: run / read the job here)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TERRATILER_API_KEY"),
        help="API key of the service (default: $TERRATILER_API_KEY)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The job request of ``batch stats`` arguments (features and output included)."""
    start, sep, end = args.time.partition("/")
    if not sep or not start or not end:
        raise SystemExit("--time: give FROM/TO, e.g. 2023-04-01/2023-10-01")
    outputs = dict(_output(text, i) for i, text in enumerate(args.expression))
    data_filter: dict[str, Any] = {"maxCloudCoverage": args.max_cloud}
    if args.mosaicking_order:
        data_filter["mosaickingOrder"] = args.mosaicking_order
    aggregation: dict[str, Any] = {
        "timeRange": {"from": start, "to": end},
        "aggregationInterval": {"of": args.interval, "lastIntervalBehavior": args.last_interval},
        "outputs": {name: {"expression": expression} for name, expression in outputs.items()},
        "mask": args.mask,
    }
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
        body["output"] = args.out if "://" in args.out else str(Path(args.out).resolve())
    return body


# ------------------------------------------------------------------------------ follow


def _follow(
    fetch: Callable[[], dict[str, Any]],
    show: bool,
    busy: set[str],
) -> dict[str, Any]:
    """Poll a job until it leaves ``busy`` states, drawing a tqdm bar of its features."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="feature", disable=not show, file=sys.stderr, dynamic_ncols=True)
    try:
        while True:
            view = fetch()
            features = view["progress"]["features"]
            total = int(features["total"] or 0)
            processed = features["done"] + features["failed"] + features["invalid"]
            if total and bar.total != total:
                bar.total = total
            bar.n = processed
            bar.set_postfix(status=view["status"], failed=features["failed"], refresh=False)
            bar.refresh()
            if view["status"] not in busy:
                return view
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()


def _report(view: dict[str, Any]) -> int:
    features = view["progress"]["features"]
    print(
        f"job {view['id']}: {view['status']}: {features['done']} done, {features['failed']} "
        f"failed, {features['invalid']} invalid of {features['total']} features"
    )
    if view.get("error"):
        print(f"error: {view['error']}")
    for failure in (view.get("failedFeatures") or [])[:10]:
        print(f"  failed {failure['id']} ({failure.get('identifier')}): {failure['error']}")
    if view.get("results"):
        print(f"results: {view['output']}/ (results.parquet, <id>.json)")
    return EXIT_CODES.get(view["status"], 1)


# ------------------------------------------------------------------------------ remote


class _Remote:
    """The batch API of a running service."""

    def __init__(self, server: str, api_key: str | None):
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=120.0)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, f"/batch/statistics{path}", **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise SystemExit(f"{method} /batch/statistics{path}: {response.status_code} {detail}")
        return response.json()

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


def _stats(args: argparse.Namespace) -> int:
    body = build_request(args)
    show = not args.no_progress
    if args.server:
        remote = _Remote(args.server, args.api_key)
        job = remote.create(body)
        remote.call("POST", f"/{job['id']}/start")
        print(f"job {job['id']} submitted to {args.server}", file=sys.stderr)
        if args.detach:
            print(job["id"])
            return 0
        view = _follow(lambda: remote.call("GET", f"/{job['id']}"), show, BUSY)
        return _report(view)
    return _run_here(args, body, show)


def _run_here(args: argparse.Namespace, body: dict[str, Any], show: bool) -> int:
    from app.batch import BatchService, BatchStatisticalRequest
    from app.services import catalog_factory, configure_process
    from app.settings import Settings

    settings = Settings()
    if args.workers:
        settings = settings.model_copy(update={"batch_workers": args.workers})
    # Before the LocalCluster starts: its workers inherit GDAL's environment.
    configure_process(settings)
    # The operator runs this: their files and folders need no allow-list.
    service = BatchService(settings, catalog_factory(settings), check_sources=False, takeover=False)
    try:
        job = service.create(BatchStatisticalRequest.model_validate(body))
        print(f"job {job['id']}: output {job['output']}", file=sys.stderr)
        service.start(job["id"])
        try:
            view = _follow(lambda: service.get(job["id"]), show, BUSY)
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
        return _report(_follow(lambda: remote.call("GET", f"/{args.job_id}"), show, running))
    from app.batch import BatchService
    from app.services import catalog_factory
    from app.settings import Settings

    settings = Settings()
    service = BatchService(settings, catalog_factory(settings), takeover=False)
    try:
        return _report(_follow(lambda: service.get(args.job_id), show, running))
    finally:
        service.close()
