"""One producer/consumer pipeline written against PEP 734's API, run twice:
on ``tpshare.interpreters`` and on CPython's own implementation of it
(3.13: ``test.support.interpreters`` and its queues, which the
``interpreters-pep-734`` backport wraps; 3.12 has no cross-interpreter
queue and is reported as skipped).  The same function, two imports.

The pipeline: a producer thread of the main interpreter puts N items
(``(i, 64 bytes)``) on a bounded queue; a stage running in an isolated
interpreter (``Interpreter.exec`` on a thread) takes each one, and puts
``(i, len(payload))`` on a second queue; the main thread takes them all.
Timed from the first put to the last get; items per second, median over
rounds, and the ratio tpshare / CPython (above 1: tpshare faster).
"""

import importlib
import statistics
import sys
import threading
import time

from . import common

IMPLEMENTATIONS = ("tpshare", "cpython")
MAXSIZE = 64
PAYLOAD = b"p" * 64

# The stage, as source code: the same text runs in both implementations'
# interpreters (their __main__ holds the two queues).
STAGE = """\
while True:
    item = qin.get()
    if item is None:
        qout.put(None)
        break
    qout.put((item[0], len(item[1])))
"""


def load(name):
    """The PEP 734 module of implementation `name`, or (None, why)."""
    if name == "tpshare":
        return importlib.import_module("tpshare.interpreters"), None
    if sys.version_info < (3, 13):
        return None, ("CPython 3.12 has no cross-interpreter queue (PEP 734's "
                      "queues first shipped in 3.13's test.support."
                      "interpreters)")
    try:
        mod = importlib.import_module("test.support.interpreters")
        importlib.import_module("test.support.interpreters.queues")
    except ImportError as exc:
        return None, f"test.support.interpreters is not installed ({exc})"
    return mod, None


def pipeline(interpreters, n):
    """Run the pipeline once with n items on PEP 734 module
    `interpreters`; seconds from the first put to the last get."""
    interp = interpreters.create()
    try:
        qin = interpreters.create_queue(MAXSIZE)
        qout = interpreters.create_queue(MAXSIZE)
        # CPython rebuilds a queue in an interpreter only once its queue
        # module is imported there (it registers the type); harmless for
        # tpshare, so the code stays the same for both.
        interp.exec(f"import {type(qin).__module__}")
        interp.prepare_main(qin=qin, qout=qout)
        stage = threading.Thread(target=interp.exec, args=(STAGE,))
        stage.start()

        def produce():
            for i in range(n):
                qin.put((i, PAYLOAD))
            qin.put(None)

        t0 = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        got = 0
        while qout.get() is not None:
            got += 1
        elapsed = time.perf_counter() - t0
        producer.join()
        stage.join()
        if got != n:
            raise RuntimeError(f"the pipeline delivered {got} of {n} items")
        return elapsed
    finally:
        interp.close()


def steps(ctx, names=None):
    return len(IMPLEMENTATIONS) * (1 + ctx.repeat)


def run(ctx, names=None):
    n = 2_000 if ctx.quick else 20_000
    results, skipped, errors = {}, {}, {}
    for name in IMPLEMENTATIONS:
        ctx.progress.step(f"pep734: {name}: warm-up")
        mod, why = load(name)
        if mod is None:
            skipped[name] = why
            for _ in range(ctx.repeat):
                ctx.progress.step(f"pep734: {name}: skipped")
            continue
        try:
            pipeline(mod, min(n, 200))
            times = []
            for r in range(ctx.repeat):
                ctx.progress.step(f"pep734: {name}: round {r + 1}")
                times.append(pipeline(mod, n))
        except Exception as exc:  # noqa: BLE001 - reported
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        med = statistics.median(times)
        results[name] = {"seconds": times, "median_s": med,
                         "items_per_s": n / med}
    ratio = None
    if "tpshare" in results and "cpython" in results:
        ratio = (results["tpshare"]["items_per_s"]
                 / results["cpython"]["items_per_s"])
    return {"items": n, "maxsize": MAXSIZE, "payload": len(PAYLOAD),
            "results": results, "ratio": ratio, "skipped": skipped,
            "errors": errors}


def report(res):
    lines = ["\n" + common.wrap(
        f"PEP 734 pipeline: producer -> isolated interpreter -> consumer, "
        f"{res['items']} items of (int, {res['payload']} B bytes), queues "
        f"of maxsize {res['maxsize']}; the same code on two imports")]
    rows = []
    labels = {"tpshare": "tpshare.interpreters",
              "cpython": "CPython (test.support.interpreters)"}
    for name, r in res["results"].items():
        rows.append([labels[name], f"{r['items_per_s']:,.0f} items/s",
                     f"{r['median_s'] * 1e3:.1f} ms"])
    if rows:
        lines.append(common.table(["implementation", "throughput",
                                   "median time"], rows))
    if res["ratio"] is not None:
        lines.append(f"tpshare / CPython: x{res['ratio']:.1f}")
    for name, why in res["skipped"].items():
        lines.append(common.wrap(f"{labels[name]}: skipped: {why}"))
    for name, err in res["errors"].items():
        lines.append(common.wrap(f"{labels[name]}: ERROR: {err}"))
    return "\n".join(lines)
