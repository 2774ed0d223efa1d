"""Untrusted evalscripts in V8: every abuse is a 4xx naming the limit, and V8 stays healthy.

Each test runs a hostile script through ``run_v8`` / ``run_setup``, checks the status and
the limit (or line) the error names, then runs a normal NDVI script and checks its values
(numpy) and that it answers quickly: the workers survive, or are replaced at once.
"""

import dataclasses
import glob
import os
import threading
import time

import numpy as np
import pytest

from app.errors import BadRequestError, ScriptTimeoutError, TooLargeError
from app.evalscript import v8
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.v8 import run_setup, run_v8

LIMITS = dataclasses.replace(
    EvalscriptLimits.default(), timeout_seconds=1.0, memory_mb=64, block_pixels=512
)
SETUP = {"input": ["B04", "B08", "dataMask"], "output": {"bands": 1, "sampleType": "FLOAT32"}}
NDVI = """//VERSION=3
function setup() { return {input: ["B04", "B08"], output: {bands: 1}}; }
function evaluatePixel(s) { return [(s.B08 - s.B04) / (s.B08 + s.B04)]; }
"""
RNG = np.random.default_rng(7)
B04 = RNG.uniform(0.01, 0.5, (40, 50)).astype(np.float32)
B08 = RNG.uniform(0.01, 0.5, (40, 50)).astype(np.float32)
VALID = RNG.random((40, 50)) > 0.2
# A normal request after an abuse: its wall time, with a worker to start again under load.
HEALTHY_SECONDS = 5.0


def run(body: str, setup: dict | None = None, limits: EvalscriptLimits = LIMITS):
    script = f"//VERSION=3\nfunction setup() {{ return {{}}; }}\n{body}\n"
    return run_v8(script, setup or SETUP, {"B04": B04, "B08": B08}, VALID, limits)


def assert_healthy() -> None:
    """A normal script right after: the right NDVI, quickly."""
    start = time.monotonic()
    out = run_v8(NDVI, SETUP, {"B04": B04, "B08": B08}, VALID, LIMITS)["default"][0]
    elapsed = time.monotonic() - start
    expected = (B08.astype(np.float64) - B04) / (B08.astype(np.float64) + B04)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6)
    assert elapsed < HEALTHY_SECONDS, elapsed


def test_infinite_loop_in_evaluate_pixel_is_a_408_naming_the_setting() -> None:
    start = time.monotonic()
    with pytest.raises(ScriptTimeoutError) as caught:
        run("function evaluatePixel(s) { while (true) {} }")
    assert caught.value.status_code == 408
    assert "evalscript_timeout_seconds" in caught.value.message
    assert caught.value.message.startswith("evalscript: ran longer than 1 s")
    assert time.monotonic() - start < LIMITS.timeout_seconds + 3
    assert_healthy()


def test_the_time_limit_covers_all_blocks_of_a_request() -> None:
    # Each pixel waits for the next millisecond: a 512-pixel block takes 0.26..0.5 s, no
    # block alone reaches 1 s, the 20 blocks of the request do.
    script = (
        "//VERSION=3\nfunction setup() { return {}; }\n"
        "function evaluatePixel(s) { const t = Date.now(); while (Date.now() - t < 1) {}"
        " return [0]; }"
    )
    zeros = np.zeros((100, 100), np.float32)
    start = time.monotonic()
    with pytest.raises(ScriptTimeoutError, match="evalscript_timeout_seconds"):
        run_v8(script, SETUP, {"B04": zeros, "B08": zeros}, zeros > 0, LIMITS)
    assert time.monotonic() - start < LIMITS.timeout_seconds + 3
    assert_healthy()


def test_infinite_loop_at_the_top_level_is_a_408() -> None:
    with pytest.raises(ScriptTimeoutError, match="evalscript_timeout_seconds"):
        run("for (;;) {}\nfunction evaluatePixel(s) { return [0]; }")
    assert_healthy()


def test_infinite_loop_inside_setup_is_a_408() -> None:
    script = "//VERSION=3\nfunction setup() { while (true) {} }\nfunction evaluatePixel(s) {}\n"
    start = time.monotonic()
    with pytest.raises(ScriptTimeoutError, match="evalscript_timeout_seconds"):
        run_setup(script, LIMITS)
    assert time.monotonic() - start < LIMITS.timeout_seconds + 3
    assert_healthy()


def test_growing_allocation_is_a_413_naming_the_setting() -> None:
    body = (
        "const kept = [];\n"
        "function evaluatePixel(s) { while (true) kept.push(new Array(1e5).fill(1.5)); }"
    )
    with pytest.raises(TooLargeError) as caught:
        run(body)
    assert caught.value.status_code == 413
    assert "evalscript_memory_mb" in caught.value.message
    assert "64 MB" in caught.value.message
    assert_healthy()


def test_one_huge_allocation_is_a_413_and_the_process_survives() -> None:
    # V8 aborts the whole process on this one (a fatal OOM, SIGTRAP): only the worker dies.
    # (A long time limit: filling takes seconds before V8 gives up.)
    limits = dataclasses.replace(LIMITS, timeout_seconds=60.0)
    start = time.monotonic()
    with pytest.raises(TooLargeError, match="evalscript_memory_mb"):
        run("function evaluatePixel(s) { return [new Array(1e9).fill(0).length]; }", None, limits)
    assert time.monotonic() - start < 30
    assert_healthy()


def test_huge_typed_array_is_a_413() -> None:
    with pytest.raises(TooLargeError, match="evalscript_memory_mb"):
        run("function evaluatePixel(s) { return [new Float64Array(2 ** 31).length]; }")
    assert_healthy()


def test_deep_recursion_is_a_400_naming_the_line() -> None:
    body = "function down(n) { return down(n + 1) + 1; }\nfunction evaluatePixel(s) { return [down(0)]; }"
    with pytest.raises(BadRequestError) as caught:
        run(body)
    message = caught.value.message
    assert caught.value.status_code == 400
    assert "Maximum call stack size exceeded" in message
    assert "recursion" in message
    assert message.startswith("evalscript: line 3:")  # `down` is on line 3 of the script
    assert_healthy()


def test_exception_is_a_400_with_the_message_line_and_column() -> None:
    body = "function evaluatePixel(s) {\n  if (s.B04 > 0) {\n    throw new Error('no vegetation here');\n  }\n}"
    with pytest.raises(BadRequestError) as caught:
        run(body)
    assert caught.value.message == "evalscript: line 5:11: Error: no vegetation here"
    assert_healthy()


def test_type_error_in_the_script_is_a_400_with_its_line() -> None:
    with pytest.raises(BadRequestError, match=r"^evalscript: line 3:\d+: TypeError: .*undefined"):
        run("function evaluatePixel(s) { return [s.nothing.deeper]; }")
    assert_healthy()


def test_syntax_error_is_a_400_with_its_line() -> None:
    with pytest.raises(BadRequestError, match=r"^evalscript: line 4:\d+: SyntaxError"):
        run("function evaluatePixel(s) {\n  return [1 +];\n}")
    assert_healthy()


@pytest.mark.parametrize(
    ("returned", "what"),
    [
        ("'text'", "a string for output 'default'"),
        ("[1, 2]", "an array of 2 for output 'default'"),
        ("[]", "an array of 0 for output 'default'"),
        ("['a']", "an array holding a string for output 'default'"),
        ("[null]", "an array holding null for output 'default'"),
        ("[{}]", "an array holding an object for output 'default'"),
        ("undefined", "undefined for output 'default'"),
        ("5", "a number for output 'default'"),
    ],
)
def test_wrong_type_or_length_is_a_400_naming_output_and_pixel(returned: str, what: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        run(f"function evaluatePixel(s) {{ return {returned}; }}")
    message = caught.value.message
    assert message.startswith(f"evalscript: evaluatePixel returned {what} at pixel row 0, column 0")
    assert "setup() declares 1 band(s)" in message
    assert_healthy()


def test_wrong_value_at_one_pixel_names_that_pixel() -> None:
    # Pixel 1234 (row 24, column 34 of the 50-wide image) is the one that goes wrong.
    body = "let i = 0;\nfunction evaluatePixel(s) { i++; return i === 1235 ? ['x'] : [1]; }"
    with pytest.raises(BadRequestError, match="at pixel row 24, column 34"):
        run(body)
    assert_healthy()


def test_multi_output_needs_an_object_with_every_output() -> None:
    setup = {"input": ["B04"], "output": [{"id": "a", "bands": 1}, {"id": "b", "bands": 2}]}
    with pytest.raises(BadRequestError, match="several outputs \\('a', 'b'\\)"):
        run("function evaluatePixel(s) { return [1]; }", setup)
    with pytest.raises(BadRequestError, match="returned undefined for output 'b'"):
        run("function evaluatePixel(s) { return {a: [1]}; }", setup)
    with pytest.raises(BadRequestError, match="an array of 1 for output 'b'"):
        run("function evaluatePixel(s) { return {a: [1], b: [2]}; }", setup)
    out = run("function evaluatePixel(s) { return {a: [s.B04], b: [true, false]}; }", setup)
    np.testing.assert_array_equal(out["a"][0], B04)
    assert (out["b"][0] == 1).all() and (out["b"][1] == 0).all()  # booleans as 1 / 0
    # Typed arrays are arrays too.
    body = "function evaluatePixel(s) { return {a: new Float64Array([s.B04 * 2]), b: new Float32Array([1, 2])}; }"
    out = run(body, setup)
    np.testing.assert_array_equal(out["a"][0], B04 * 2)
    assert (out["b"][1] == 2).all()
    assert_healthy()


def test_no_evaluate_pixel_is_a_400() -> None:
    with pytest.raises(BadRequestError, match="no function evaluatePixel"):
        run("const evaluate = 1;")
    assert_healthy()


def test_prototype_tampering_changes_neither_the_driver_nor_the_next_request() -> None:
    tamper = """
Object.defineProperty(Object.prototype, "B04", { get() { return 1000; }, set(v) { throw new Error("set"); } });
Object.defineProperty(Array.prototype, "0", { get() { return 1000; }, set(v) { throw new Error("set"); } });
Object.defineProperty(Object.prototype, "default", { get() { return [1000]; } });
Array.isArray = () => false;
Array.prototype.push = () => { throw new Error("push"); };
Array.prototype.map = () => { throw new Error("map"); };
Float32Array.prototype.set = () => { throw new Error("set"); };
Uint8Array.prototype.fill = () => { throw new Error("fill"); };
Object.freeze = () => { throw new Error("freeze"); };
JSON.stringify = () => "{}";
Math.max = () => 1000;
Function.prototype.call = () => 1000;
Function.prototype.apply = () => 1000;
globalThis.Float32Array = null;
var leaked = "from the previous request";
function evaluatePixel(s) { return [(s.B08 - s.B04) / (s.B08 + s.B04), s.dataMask]; }
"""
    setup = {"input": ["B04", "B08", "dataMask"], "output": {"bands": 2}}
    out = run(tamper, setup)["default"]
    expected = (B08.astype(np.float64) - B04) / (B08.astype(np.float64) + B04)
    np.testing.assert_allclose(out[0], expected.astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(out[1], VALID.astype(np.float32))
    # The next request sees none of it: a fresh context.
    probe = """
function evaluatePixel(s) {
  return [typeof leaked === "undefined" ? 1 : 0, Math.max(1, 2), [5].map((x) => x)[0],
          Array.isArray([]) ? 1 : 0, ({}).B04 === undefined ? 1 : 0];
}"""
    out = run(probe, {"input": ["B04"], "output": {"bands": 5}})["default"]
    assert out.reshape(5, -1)[:, 0].tolist() == [1, 2, 5, 1, 1]
    assert_healthy()


def test_setup_tampering_json_still_returns_setup() -> None:
    script = (
        '//VERSION=3\nJSON.stringify = () => \'{"input": ["B01"]}\';\n'
        "function setup() { const bands = ['B04']; return {input: bands.concat('B08'), output: {bands: 1}}; }\n"
        "function evaluatePixel(s) { return [0]; }\n"
    )
    assert run_setup(script, LIMITS) == {"input": ["B04", "B08"], "output": {"bands": 1}}
    assert_healthy()


def test_no_access_to_anything_outside() -> None:
    probe = """
function evaluatePixel(s) {
  return [[typeof require, typeof process, typeof fetch, typeof XMLHttpRequest, typeof setTimeout,
          typeof importScripts, typeof Deno, typeof module, typeof WebAssembly,
          typeof SharedArrayBuffer, typeof Atomics].every((t) => t === "undefined") ? 1 : 0];
}"""
    out = run(probe, {"input": ["B04"], "output": {"bands": 1}})["default"]
    assert (out == 1).all()
    for attempt in ("require('fs')", "process.exit(1)", "fetch('http://127.0.0.1/')"):
        with pytest.raises(BadRequestError, match="ReferenceError"):
            run(f"function evaluatePixel(s) {{ return [{attempt}]; }}")
    with pytest.raises(BadRequestError):
        run("function evaluatePixel(s) { return [import('fs')]; }")
    assert_healthy()


def test_setup_errors_are_400s() -> None:
    with pytest.raises(
        BadRequestError, match=r"line 2:\d+: ReferenceError: nothing is not defined"
    ):
        run_setup("//VERSION=3\nfunction setup() { return nothing; }\n", LIMITS)
    with pytest.raises(BadRequestError, match="setup\\(\\) returns no object"):
        run_setup("//VERSION=3\nfunction evaluatePixel(s) { return [0]; }\n", LIMITS)
    with pytest.raises(BadRequestError, match="must return an object"):
        run_setup("//VERSION=3\nfunction setup() { return [1]; }\n", LIMITS)
    assert_healthy()


def test_a_globals_of_one_request_is_absent_from_the_next() -> None:
    first = "globalThis.secret = 42;\nvar count = 0;\nfunction evaluatePixel(s) { count++; return [count]; }"
    out = run(first, {"input": ["B04"], "output": {"bands": 1}})["default"]
    assert out.max() == B04.size  # one context for all blocks of a request
    second = "function evaluatePixel(s) { return [typeof secret === 'undefined' && typeof count === 'undefined' ? 1 : 0]; }"
    out = run(second, {"input": ["B04"], "output": {"bands": 1}})["default"]
    assert (out == 1).all()
    assert_healthy()


def test_concurrent_requests_each_get_their_own_context() -> None:
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            body = f"var k = {k};\nfunction evaluatePixel(s) {{ return [k + s.B04]; }}"
            results[k] = run(body, {"input": ["B04"], "output": {"bands": 1}})["default"][0]
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for k in range(4):
        np.testing.assert_allclose(results[k], B04.astype(np.float64) + k, rtol=1e-6)
    assert_healthy()


def test_no_shared_pixel_files_are_left_behind() -> None:
    before = set(glob.glob("/dev/shm/terratiler-v8-*"))
    with pytest.raises(TooLargeError):
        limits = dataclasses.replace(LIMITS, timeout_seconds=60.0)
        run("function evaluatePixel(s) { return [new Array(1e9).fill(0).length]; }", None, limits)
    assert_healthy()
    if os.path.isdir("/dev/shm"):
        # Other processes (a service, a benchmark) may make files of their own meanwhile:
        # a new file is this process's only when an idle worker of its pool keeps it.
        kept = {w.shm.name for w in v8._POOL.idle if getattr(w, "shm", None) is not None}
        new = set(glob.glob("/dev/shm/terratiler-v8-*")) - before
        assert not {path for path in new if path not in kept and _opened_here(path)}


def _opened_here(path: str) -> bool:
    """Whether this process has ``path`` open (its pool's file, not another process's)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize(
    ("behaviour", "error", "named"),
    [
        ("import time; time.sleep(60)", ScriptTimeoutError, "evalscript_timeout_seconds"),
        (
            "import sys, os; sys.stdin.buffer.read(1);"
            " sys.stderr.write('#\\n# Fatal JavaScript out of memory: invalid table size\\n');"
            " sys.stderr.flush(); os.abort()",
            TooLargeError,
            "evalscript_memory_mb",
        ),
        ("import sys; sys.stdin.buffer.read(1); sys.exit(3)", BadRequestError, "exit code 3"),
    ],
)
def test_a_worker_that_hangs_or_dies_is_a_4xx(
    tmp_path, monkeypatch, behaviour, error, named
) -> None:
    # The service's side of the worker contract, with stand-in workers: one that never
    # answers is killed after the time limit (plus a grace), one that dies answers by how.
    from app.evalscript import v8

    fake = tmp_path / "worker.py"
    fake.write_text(behaviour + "\n")
    monkeypatch.setattr(v8, "_WORKER", fake)
    monkeypatch.setattr(v8, "_GRACE_SECONDS", 0.5)
    monkeypatch.setattr(v8, "_POOL", v8._Pool())
    start = time.monotonic()
    with pytest.raises(error, match=named):
        run("function evaluatePixel(s) { return [0]; }")
    assert time.monotonic() - start < LIMITS.timeout_seconds + 3
    assert v8._POOL.idle == []  # not kept
    monkeypatch.undo()
    assert_healthy()


def test_scripts_take_turns_at_v8_and_a_long_wait_is_a_503(monkeypatch) -> None:
    from app.errors import BusyError
    from app.evalscript import v8

    monkeypatch.setattr(v8, "_RUNNING", threading.BoundedSemaphore(1))
    monkeypatch.setattr(v8, "_QUEUE_SECONDS", 0.3)
    v8._RUNNING.acquire()  # another request holds the only turn
    try:
        with pytest.raises(BusyError, match="V8 workers .*were busy") as caught:
            run("function evaluatePixel(s) { return [0]; }")
        assert caught.value.status_code == 503
    finally:
        v8._RUNNING.release()
    assert_healthy()
