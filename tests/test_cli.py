"""``terratiler`` CLI: --catalog / --data-dir, checked before anything is written (issue 15)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``terratiler ARGS`` in ``cwd`` (outside the repository), this worktree's ``app``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")}
    clean |= {"PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _stats(features: str, *extra: str) -> list[str]:
    return ["batch", "stats", features, "-e", "ndvi", "--time", "2023-04-01/2023-10-01", *extra]


def test_missing_catalog_fails_before_writing_anything(tmp_path):
    features = tmp_path / "fields.geojson"
    features.write_text('{"type": "FeatureCollection", "features": []}')
    work = tmp_path / "work"
    work.mkdir()
    for args in (
        _stats(str(features)),  # the default catalog, data/demo, is not here
        _stats(str(features), "--catalog", str(tmp_path / "nope")),
        ["serve", "--catalog", str(tmp_path / "nope")],
    ):
        run = _run(args, work)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("terratiler: --catalog: "), run.stderr
        assert "Traceback" not in run.stderr
    monitor = _run(["batch", "monitor", "some-job"], work)
    assert monitor.returncode == 2 and "--data-dir" in monitor.stderr
    assert list(work.iterdir()) == []  # no ./data, no database


def test_catalog_and_data_dir_options_run_a_job(demo_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    args = ["--catalog", str(demo_dir), "--data-dir", str(data), "--no-progress"]
    run = _run(
        [*_stats(str(demo_dir / "fields.geojson"), "--interval", "P1M", "--workers", "1"), *args],
        work,
        TERRATILER_BATCH_WORKERS="1",
    )
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.split()[1].rstrip(":")
    assert (data / "terratiler.db").is_file()
    assert list(work.iterdir()) == []
    monitor = _run(["batch", "monitor", job_id, *args], work)
    assert monitor.returncode == 0 and "DONE" in monitor.stdout


def test_help_lists_batch_and_shows_defaults(tmp_path):
    top = _run(["--help"], tmp_path)
    assert top.returncode == 0 and "batch" in top.stdout
    stats = _run(["batch", "stats", "--help"], tmp_path, TERRATILER_CATALOG="/srv/catalog")
    text = " ".join(stats.stdout.split())
    assert "--catalog CATALOG" in text and "(default: /srv/catalog" in text
    assert "(default: data," in text and "(default: P1D)" in text
    serve = " ".join(_run(["serve", "--help"], tmp_path).stdout.split())
    assert "(default: 8000)" in serve and "(default: data/demo," in serve
