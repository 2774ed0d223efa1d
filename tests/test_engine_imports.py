"""The engine is a library: importing it never loads the web stack (DESIGN.md, issue 13).

Dask workers import ``app.batch.worker``; the CLI and the routers import the engine too.
Each package is imported in a fresh interpreter, so modules the test process already
loaded cannot hide an import.
"""

import json
import subprocess
import sys

import pytest

ENGINE = [
    "app.catalog",
    "app.stats",
    "app.batch",
    "app.mosaic",
    "app.batch.worker",
    "app.evalscript.script",
    "app.evalscript.band_math",
    "app.evalscript.v8",
]
WEB_STACK = ["fastapi", "starlette", "titiler.core.factory"]


@pytest.mark.parametrize("package", ENGINE)
def test_engine_packages_do_not_import_the_web_stack(package):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({package!r})\n"
        f"print(json.dumps([m for m in {WEB_STACK!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"{package} imports the web stack"
