"""Helpers shared by the benchmarks in bench/: a description of the
machine and the Python build, timing loops reported as medians, command
line options common to every benchmark, JSON output, and an isolated
subinterpreter to run code in.

Not a benchmark itself; the bench_*.py scripts import it from their own
folder.
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import sysconfig
import textwrap
import time

import tpshare

# ---------------------------------------------------------------------------
# Command line and output.


def parser(doc):
    """An ArgumentParser with the options every benchmark takes: --quick
    (fewer, shorter rounds, for a CI smoke run), --json PATH, --repeat N
    and --cpu N.  The description is the first line of doc."""
    p = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer and shorter repeats (smoke test, noisier)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the machine description and results as JSON")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="rounds of measurement (the median is reported)")
    p.add_argument("--cpu", type=int, metavar="N",
                   help="pin the process to CPU N (default: let the OS choose)")
    return p


def setup(args):
    """Apply the common options that act before measuring (--cpu)."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})


def write_json(path, benchmark, params, results):
    """Write one benchmark run, with the machine description, to path."""
    doc = {
        "benchmark": benchmark,
        "machine": machine_info(),
        "params": params,
        "results": results,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


def print_table(headers, rows):
    """Print rows (sequences of str) under headers, columns right-aligned
    except the first."""
    widths = [max(len(str(r[i])) for r in [headers, *rows])
              for i in range(len(headers))]

    def line(cells):
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return " | ".join(out)

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def fmt_ns(ns):
    """Nanoseconds as a short human-readable figure."""
    if ns is None:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.1f} ns"


def fmt_size(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------
# The machine.


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_machine = None


def machine_info():
    """What a figure depends on: Python version and build, tpshare, CPU.
    Measured once per process (the date is that of the first call)."""
    global _machine
    if _machine is None:
        _machine = _measure_machine()
    return _machine


def _measure_machine():
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.replace("\n", " "),
        "executable": sys.executable,
        "cflags": sysconfig.get_config_var("CFLAGS"),
        "config_args": sysconfig.get_config_var("CONFIG_ARGS"),
        "py_debug": bool(sysconfig.get_config_var("Py_DEBUG")),
        "tpshare": f"{tpshare.__version__} ({os.path.dirname(tpshare.__file__)})",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "empty_loop_ns": round(empty_loop_ns(), 1),
    }


def print_header(title, doc):
    """Print what the benchmark measures (the first paragraph of doc), then
    the machine description."""
    print(title)
    print(textwrap.indent(doc.strip().split("\n\n")[0], "  "))
    print()
    info = machine_info()
    print(f"date:     {info['date']}")
    print(f"python:   {info['python']}")
    print(f"          {info['executable']}")
    print(f"CFLAGS:   {info['cflags']}")
    print(f"config:   {info['config_args'] or '(none)'}")
    print(f"tpshare:  {info['tpshare']}")
    print(f"machine:  {info['platform']}")
    print(f"cpu:      {info['cpu']}, {info['cores']} cores, "
          f"affinity {info['affinity']}")
    print(f"empty loop iteration: {info['empty_loop_ns']} ns "
          "(a gauge of the CPU's speed now; compare only within one run)")
    print()


# ---------------------------------------------------------------------------
# Timing.

clock = time.perf_counter_ns


def _empty_loop(n):
    it = itertools.repeat(None, n)
    t0 = clock()
    for _ in it:
        pass
    return clock() - t0


def empty_loop_ns(n=200_000, repeat=5):
    """Median cost of one iteration of an empty `for` loop: a quick gauge
    of how fast the CPU we run on is right now."""
    return statistics.median(_empty_loop(n) for _ in range(repeat)) / n


def calibrate(loop, target_ns, start=10):
    """The number of iterations for which loop(number) takes about
    target_ns (loop returns elapsed ns), like timeit's autorange."""
    number = start
    while True:
        elapsed = loop(number)
        if elapsed >= target_ns / 4 or number >= 1 << 30:
            return max(1, int(number * target_ns / max(elapsed, 1)))
        number *= 4


def interleaved(loops, number, repeat):
    """Run each of loops(number) once per round, for repeat rounds, in
    alternating order, so that a change of CPU speed during the run (this
    machine's vCPUs slow down and recover within seconds) hits every
    contender alike.  Returns a list per loop of ns per iteration, one per
    round."""
    out = [[] for _ in loops]
    order = list(range(len(loops)))
    for _ in range(repeat):
        for i in order:
            out[i].append(loops[i](number) / number)
        order.reverse()
    return out


def paired_ratio(num, den):
    """Median over rounds of num[i] / den[i]: the ratio of two contenders
    timed side by side, robust to the CPU changing speed between rounds."""
    return statistics.median(a / b for a, b in zip(num, den))


def median(values):
    return statistics.median(values)


# ---------------------------------------------------------------------------
# A subinterpreter from the standard library (not made by tpshare), with
# its own GIL, that code runs in from the calling thread.

try:  # 3.13
    import _interpreters as _stdinterp

    def _create():
        return _stdinterp.create("isolated")

    def _exec(iid, code):
        err = _stdinterp.exec(iid, code)
        if err is not None:
            raise RuntimeError(f"in subinterpreter: {err.formatted}")

except ImportError:  # 3.12
    import _xxsubinterpreters as _stdinterp

    def _create():
        return _stdinterp.create(isolated=True)

    def _exec(iid, code):
        try:
            _stdinterp.run_string(iid, code)
        except _stdinterp.RunFailedError as exc:
            raise RuntimeError(f"in subinterpreter: {exc}") from None


class Subinterpreter:
    """An isolated subinterpreter; use as a context manager."""

    def __init__(self):
        self.id = _create()

    def run(self, code):
        """Run source code in the subinterpreter's __main__."""
        _exec(self.id, textwrap.dedent(code))

    def close(self):
        if self.id is not None:
            _stdinterp.destroy(self.id)
            self.id = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
