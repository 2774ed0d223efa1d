"""The V8 worker process: runs evalscripts in mini-racer, one fresh context per request.

Started by ``app.evalscript.v8`` as ``python v8_worker.py`` (a plain script: it imports
nothing of ``app``, only numpy and mini-racer), it reads pickled requests on stdin and writes
pickled answers on stdout, one at a time. V8 runs in this separate process because an
untrusted script can take it down: one large allocation (``new Array(1e9).fill(0)``) is a
fatal V8 out-of-memory abort (SIGTRAP) that no limit turns into an exception, and a context
that reached its heap limit can hang when it is freed. The parent kills a worker that
overruns, and a worker exits after any limit it hit.

Requests (dicts): ``{"op": "setup", "script", "timeout", "memory_mb"}`` returns what
``setup()`` returns (JSON-decoded); ``{"op": "run", "script", "names", "pixels", "shm" (the
path of a file both map: inputs, mask and outputs, see ``shared_views``), "shm_size",
"keep_shm" (keep it mapped for the next request), "width", "outputs" [(id, bands)], "block",
"timeout", "memory_mb"}`` writes the outputs into that file. Answers: ``("ok", value)`` or
``("error", kind, message)`` with kind ``bad_request``, ``timeout`` or ``memory``.

Pixels move as typed arrays: the driver (generated per request, evaluated before the script)
allocates its Float32Array/Uint8Array buffers in V8, and Python writes into and reads from
them through mini-racer's memoryviews of the ArrayBuffers (no copy through JSON or strings),
one JS call per block of pixels; the per-pixel loop runs in V8.
"""

import json
import mmap
import os
import pickle
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from py_mini_racer import MiniRacer
from py_mini_racer._dll import init_mini_racer
from py_mini_racer._exc import (
    JSEvalException,
    JSOOMException,
    JSParseException,
    JSTimeoutException,
)

PRELUDE = (Path(__file__).with_name("prelude.js")).read_text() + "\n//# sourceURL=prelude.js\n"
SCRIPT_URL = "evalscript.js"
_FRAME = re.compile(re.escape(SCRIPT_URL) + r":(\d+):(\d+)")
# A syntax error names the script `<anonymous>` (its sourceURL comment was not parsed).
_FIRST_LINE = re.compile(r"^(?:" + re.escape(SCRIPT_URL) + r"|<anonymous>):(\d+): (.*)")

# Globals a script has no use for: mini-racer's timers (`var`s: not deletable, so emptied)
# would run the script's code after a block returned; WebAssembly compiles code and memory
# outside the JS heap; SharedArrayBuffer and Atomics (Atomics.wait) block.
_HARDEN = """
(function () {
  globalThis.setTimeout = undefined;
  globalThis.clearTimeout = undefined;
  globalThis.__timer_manager = undefined;
  delete globalThis.WebAssembly;
  delete globalThis.SharedArrayBuffer;
  delete globalThis.Atomics;
})();
"""


class LimitError(Exception):
    """A request stopped on a limit or a script error: ``kind`` and a message for the caller."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def js_error(error: JSEvalException, memory_mb: int) -> LimitError:
    """A script exception or syntax error as a 400 naming the line:column and JS message."""
    text = str(error)
    lines = text.split("\n")
    message = lines[0]
    first = _FIRST_LINE.match(lines[0])
    if first:
        message = first.group(2)
    # The stack (after the source line and its caret) repeats the message on its first line.
    frames = [line for line in lines if line.lstrip().startswith("at ")]
    # The stack follows a blank line; the source line of a syntax error may be blank too
    # (the end of the script), then the caret line (`^`) follows a blank line: not a message.
    for block in text.split("\n\n")[1:]:
        head = block.split("\n", 1)[0]
        if head.strip() and head.strip() != "^" and not head.lstrip().startswith("at "):
            message = head
            break
    location = ""
    for frame in frames:
        found = _FRAME.search(frame)
        if found:
            location = f"line {found.group(1)}:{found.group(2)}: "
            break
    if not location and first:
        column = ""
        if len(lines) >= 3 and "^" in lines[2]:
            column = f":{lines[2].index('^') + 1}"
        location = f"line {first.group(1)}{column}: "
    if "Maximum call stack size exceeded" in message:
        message += " (recursion too deep)"
    if "Array buffer allocation failed" in message:
        return LimitError("memory", f"evalscript: {location}{message}; {_over_memory(memory_mb)}")
    return LimitError("bad_request", f"evalscript: {location}{message}")


def _over_memory(memory_mb: int) -> str:
    return f"used more than {memory_mb} MB of V8 heap (evalscript_memory_mb)"


class Budget:
    """The wall time left of one request (``evalscript_timeout_seconds`` over all calls)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left, or a timeout LimitError when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.error()
        return left

    def error(self) -> LimitError:
        """The timeout LimitError."""
        return LimitError(
            "timeout",
            f"evalscript: ran longer than {self.seconds:g} s (evalscript_timeout_seconds)",
        )


def _call(racer: MiniRacer, budget: Budget, memory_mb: int, code: str) -> Any:
    """Evaluate ``code`` within the request's time and heap limits (LimitError otherwise).

    After the script has run, only source text is evaluated: calling a JS function handle
    from Python goes through ``Array.prototype.push`` (mini-racer builds the arguments in
    JS), which a script may have replaced.
    """
    try:
        return racer.eval(code, timeout_sec=budget.left())
    except JSTimeoutException:
        raise budget.error() from None
    except JSOOMException:
        raise LimitError("memory", f"evalscript: {_over_memory(memory_mb)}") from None
    except (JSParseException, JSEvalException) as error:
        if racer.was_hard_memory_limit_reached():
            raise LimitError("memory", f"evalscript: {_over_memory(memory_mb)}") from None
        raise js_error(error, memory_mb) from None


def _entry(racer: MiniRacer, function_source: str) -> str:
    """Bind a function (evaluated now, before the script) to a fixed global name.

    The property is neither writable nor configurable and its name is random: the script
    can neither replace it nor declare that name.
    """
    name = f"__terratiler_{secrets.token_hex(8)}"
    racer.eval(
        f"Object.defineProperty(globalThis, {json.dumps(name)}, {{value: {function_source},"
        " writable: false, configurable: false, enumerable: false}); undefined"
    )
    return name


def fresh_context() -> MiniRacer:
    """A new V8 context with the helper library, which no script has run in."""
    racer = MiniRacer()
    racer.eval(_HARDEN)
    racer.eval(PRELUDE)
    return racer


_READY: list[MiniRacer] = []  # the next request's context, made while the worker was idle


def _context(memory_mb: int) -> MiniRacer:
    racer = _READY.pop() if _READY else fresh_context()
    racer.set_hard_memory_limit(memory_mb * 1024 * 1024)
    return racer


def _close_unless_limit(racer: MiniRacer, error: LimitError) -> None:
    # After a timeout or the heap limit the worker exits instead: freeing such a context
    # can hang.
    if error.kind == "bad_request":
        racer.close()


def _load_script(racer: MiniRacer, script: str, budget: Budget, memory_mb: int) -> None:
    _call(racer, budget, memory_mb, script + f"\n//# sourceURL={SCRIPT_URL}\n")


def run_setup(request: dict[str, Any]) -> Any:
    """``setup()``'s value, JSON-decoded."""
    budget = Budget(request["timeout"])
    memory_mb = request["memory_mb"]
    racer = _context(memory_mb)
    try:
        # Taken before the script runs: a script replacing JSON.stringify changes nothing.
        call_setup = _entry(
            racer,
            "(function () { const stringify = JSON.stringify; return function () {"
            " if (typeof setup !== 'function') return undefined;"
            " const value = setup(); return value === undefined ? undefined : stringify(value);"
            " }; })()",
        )
        _load_script(racer, request["script"], budget, memory_mb)
        text = _call(racer, budget, memory_mb, f"{call_setup}()")
        if not isinstance(text, str):
            raise LimitError("bad_request", "evalscript: setup() returns no object")
    except LimitError as error:
        _close_unless_limit(racer, error)
        raise
    racer.close()
    return json.loads(text)


def driver_source(names: list[str], outputs: list[tuple[str, int]], block: int, entry: str) -> str:
    """The JS driver of one request: buffers, the sample object, the per-pixel loop.

    Evaluated before the script, it takes what it uses (``Array.isArray``, the typed array
    constructors) at that time, so a script that overwrites prototypes or ``Math`` changes
    its own results only. ``evaluatePixel`` is looked up when a block runs (a function or a
    ``const`` of the script). The loop is the global ``entry(n)`` (see ``_entry``); the
    value is ``{buffers}``, the ArrayBuffers Python fills and reads.
    """
    fields = [f"{json.dumps(name)}: input[{i * block} + p]" for i, name in enumerate(names)]
    fields.append('"dataMask": valid[p]')
    sample = "{" + ", ".join(fields) + "}"
    single = len(outputs) == 1
    checks = []
    for k, (output_id, bands) in enumerate(outputs):
        key = json.dumps(output_id)
        if single:
            pick = (
                f"let a = r; if (!isArray(a) && !isView(a)) {{ if (a !== null && "
                f"typeof a === 'object' && (isArray(a[{key}]) || isView(a[{key}]))) a = a[{key}]; "
                f"else return bad(p, {key}, a, {bands}); }}"
            )
        else:
            pick = (
                f"const a = r[{key}]; if (!isArray(a) && !isView(a)) "
                f"return bad(p, {key}, a, {bands});"
            )
        checks.append(
            f"{{ {pick} if (a.length !== {bands}) return bad(p, {key}, a, {bands}); "
            f"const o = out[{k}]; for (let c = 0; c < {bands}; c++) {{ const v = a[c]; "
            f"if (typeof v === 'number') o[c * {block} + p] = v; "
            f"else if (typeof v === 'boolean') o[c * {block} + p] = v ? 1 : 0; "
            f"else return bad(p, {key}, a, {bands}); }} }}"
        )
    not_object = (
        ""
        if single
        else "if (r === null || typeof r !== 'object' || isArray(r)) return bad(p, null, r, 0);"
    )
    return f"""
(function () {{
  "use strict";
  const isArray = Array.isArray;
  const isView = ArrayBuffer.isView;  // a typed array returned instead of an array
  const input = new Float32Array({max(1, len(names)) * block});
  const valid = new Uint8Array({block});
  const out = [{", ".join(f"new Float32Array({bands * block})" for _, bands in outputs)}];
  const buffers = [input.buffer, valid.buffer, {", ".join(f"out[{k}].buffer" for k in range(len(outputs)))}];
  function describe(x) {{
    if (isArray(x)) return "an array of " + x.length;
    if (x === null) return "null";
    if (x === undefined) return "undefined";
    return typeof x === "object" ? "an object" : "a " + typeof x;
  }}
  function bad(p, id, x, bands) {{
    if (id === null) return p + "\\u0000" + "" + "\\u0000" + describe(x) + "\\u0000" + bands;
    let what = describe(x);
    if (isArray(x) && x.length === bands) {{
      for (let c = 0; c < bands; c++) {{
        const v = x[c];
        if (typeof v !== "number" && typeof v !== "boolean") {{ what = "an array holding " + describe(v); break; }}
      }}
    }}
    return p + "\\u0000" + id + "\\u0000" + what + "\\u0000" + bands;
  }}
  const scenes = {{}};
  const inputMetadata = {{ serviceVersion: "terratiler", normalizationFactor: 0.0001 }};
  const customData = {{}};
  const outputMetadata = {{ userData: {{}} }};
  function run(n) {{
    const ep = typeof evaluatePixel === "function" ? evaluatePixel : undefined;
    if (ep === undefined) return "-1";
    for (let p = 0; p < n; p++) {{
      const r = ep({sample}, scenes, inputMetadata, customData, outputMetadata);
      {not_object}
      {" ".join(checks)}
    }}
    return "";
  }}
  Object.defineProperty(globalThis, {json.dumps(entry)}, {{
    value: run, writable: false, configurable: false, enumerable: false
  }});
  return {{ buffers: buffers }};
}})()
//# sourceURL=driver.js
"""


def _bad_return(code: str, start: int, width: int, outputs: list[tuple[str, int]]) -> LimitError:
    if code == "-1":
        return LimitError("bad_request", "evalscript: no function evaluatePixel(sample)")
    pixel, output_id, what, bands = code.split("\u0000")
    row, column = divmod(start + int(pixel), max(1, width))
    where = f"at pixel row {row}, column {column}"
    if not output_id:
        ids = ", ".join(f"'{i}'" for i, _ in outputs)
        return LimitError(
            "bad_request",
            f"evalscript: evaluatePixel returned {what} {where}; setup() declares several "
            f"outputs ({ids}): return an object {{id: [values]}}",
        )
    return LimitError(
        "bad_request",
        f"evalscript: evaluatePixel returned {what} for output '{output_id}' {where}; "
        f"setup() declares {bands} band(s): return an array of {bands} numbers",
    )


def shared_views(
    shared: Any, bands: int, n: int, outputs: list[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The arrays in the file the parent and the worker share: inputs, mask, outputs.

    Layout: float32 inputs (bands, n), then each output's float32 (bands, n), then the
    uint8 mask (n). The parent writes the inputs and the mask, the worker the outputs.
    """
    data = np.ndarray((bands, n), np.float32, buffer=shared, offset=0)
    offset = bands * n * 4
    result = {}
    for output_id, count in outputs:
        result[output_id] = np.ndarray((count, n), np.float32, buffer=shared, offset=offset)
        offset += count * n * 4
    valid = np.ndarray((n,), np.uint8, buffer=shared, offset=offset)
    return data, valid, result


def shared_size(bands: int, n: int, outputs: list[tuple[str, int]]) -> int:
    """Bytes of the shared file (see ``shared_views``)."""
    return 4 * n * (bands + sum(count for _, count in outputs)) + n


_SHARED: dict[str, Any] = {}  # the parent's file: path, size, map (kept between requests)


def _map_shared(path: str, size: int) -> mmap.mmap:
    if _SHARED.get("path") != path or _SHARED.get("size") != size:
        _unmap_shared()
        with open(path, "r+b") as file:
            _SHARED.update(path=path, size=size, map=mmap.mmap(file.fileno(), size))
    return _SHARED["map"]


def _unmap_shared() -> None:
    if "map" in _SHARED:
        _SHARED["map"].close()
    _SHARED.clear()


def run_pixels(request: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every pixel through evaluatePixel, block by block."""
    budget = Budget(request["timeout"])
    memory_mb = request["memory_mb"]
    names: list[str] = request["names"]
    outputs: list[tuple[str, int]] = request["outputs"]
    n: int = request["pixels"]
    shared = _map_shared(request["shm"], request["shm_size"])
    data, valid, result = shared_views(shared, len(names), n, outputs)
    block = max(1, min(request["block"], n))
    racer = _context(memory_mb)
    try:
        run = f"__terratiler_{secrets.token_hex(8)}"
        driver = racer.eval(driver_source(names, outputs, block, run))
        buffers = [np.frombuffer(view, dtype=np.uint8) for view in driver["buffers"]]
        input_view = buffers[0].view(np.float32).reshape(max(1, len(names)), block)
        valid_view = buffers[1]
        out_views = [
            buffers[2 + k].view(np.float32).reshape(bands, block)
            for k, (_, bands) in enumerate(outputs)
        ]
        _load_script(racer, request["script"], budget, memory_mb)
        for start in range(0, n, block):
            count = min(block, n - start)
            if names:
                input_view[:, :count] = data[:, start : start + count]
            valid_view[:count] = valid[start : start + count]
            code = _call(racer, budget, memory_mb, f"{run}({count})")
            if code != "":
                raise _bad_return(str(code), start, request["width"], outputs)
            for (output_id, _), view in zip(outputs, out_views, strict=True):
                result[output_id][:, start : start + count] = view[:, :count]
    except LimitError as error:
        _close_unless_limit(racer, error)
        raise
    finally:
        del data, valid, result
        if not request["keep_shm"]:
            _unmap_shared()
    racer.close()
    return {}


def main() -> None:
    """Serve requests on stdin/stdout until stdin closes."""
    # V8's own defaults: mini-racer's --single-threaded would compile and collect garbage on
    # the one thread that runs the pixels (slower on the first blocks of every request).
    init_mini_racer(flags=())
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    while True:
        try:
            request = pickle.load(stdin)
        except EOFError:
            return
        limit_hit = False
        try:
            value = run_setup(request) if request["op"] == "setup" else run_pixels(request)
            answer: tuple[Any, ...] = ("ok", value)
        except LimitError as error:
            answer = ("error", error.kind, error.message)
            limit_hit = error.kind != "bad_request"
        except Exception as error:  # noqa: BLE001 (a bug here is the parent's 500, not a crash)
            answer = ("error", "internal", f"{type(error).__name__}: {error}")
            limit_hit = True
        pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()
        if limit_hit:
            # A context that hit its heap limit can hang when freed; a fresh process is cheap.
            os._exit(0)
        if not _READY:
            # Made after answering: the next request does not wait for it (3 ms). Each
            # context still serves one request only.
            _READY.append(fresh_context())


if __name__ == "__main__":
    main()
