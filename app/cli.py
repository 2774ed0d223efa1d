"""The ``terratiler`` command: ``serve``, ``demo``, ``batch``."""

import argparse
import os
import sys
from pathlib import Path

from app.cli_locations import HelpFormatter, add_location_options, location_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = location_settings(args)
    # Through the environment: uvicorn's factory (and its worker processes) build Settings.
    os.environ["TERRATILER_CATALOG"] = settings.catalog
    os.environ["TERRATILER_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        root_path=args.root_path,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from app.demo import generate_demo

    out = generate_demo(
        Path(args.path),
        scenes=args.scenes,
        size=args.size,
        seed=args.seed,
        cross_zone=args.cross_zone,
    )
    print(f"demo catalog written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``terratiler`` command."""
    parser = argparse.ArgumentParser(
        prog="terratiler", description=__doc__, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (uvicorn)", formatter_class=HelpFormatter)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    add_location_options(serve)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.add_argument("--root-path", default="", help="path prefix behind a reverse proxy")
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-* headers are trusted (comma-separated, or *); "
        "default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1 (uvicorn's rule)",
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo", help="write the synthetic Sentinel-2 demo catalog", formatter_class=HelpFormatter
    )
    demo.add_argument("path", help="folder to write the catalog into")
    demo.add_argument("--scenes", type=int, default=12, help="number of dates")
    demo.add_argument("--size", type=int, default=1024, help="scene width in 10 m pixels")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument(
        "--cross-zone",
        action="store_true",
        help="also write a pair of small scenes across the 18 E UTM zone boundary "
        "(EPSG:32633 and EPSG:32634)",
    )
    demo.set_defaults(func=_demo)

    from app.cli_batch import add_batch_commands

    add_batch_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``terratiler`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
