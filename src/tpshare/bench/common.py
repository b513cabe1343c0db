"""Helpers shared by the experiments and by the stand-alone scripts in
bench/: the machine and Python build a run depends on, payload sizes,
statistics, timing loops, number formatting, tables that fit a terminal,
RSS readings and a progress bar.
"""

import datetime
import itertools
import os
import platform
import statistics
import sys
import sysconfig
import textwrap
import time

import tpshare

# ---------------------------------------------------------------------------
# Payload sizes.  The names are what --sizes accepts (argparse choices).

SIZES = {
    "64": 64,
    "128": 128,
    "256": 256,
    "512": 512,
    "1K": 1 << 10,
    "2K": 2 << 10,
    "4K": 4 << 10,
    "8K": 8 << 10,
    "16K": 16 << 10,
    "64K": 64 << 10,
    "256K": 256 << 10,
    "1M": 1 << 20,
    "4M": 4 << 20,
    "16M": 16 << 20,
    "64M": 64 << 20,
    "256M": 256 << 20,
}
SIZE_NAMES = tuple(SIZES)


def size_name(text):
    """Canonical size name for what a user typed ("1k", "1KiB", "1024",
    "64B" -> "1K", "1K", "1K", "64"); unknown text comes back unchanged,
    for argparse's choices to reject with the list of valid names."""
    t = text.strip().upper().replace("IB", "").rstrip("B")
    if t in SIZES:
        return t
    if t.isdigit():
        for name, n in SIZES.items():
            if n == int(t):
                return name
    return text


def fmt_size(n):
    """Bytes as "64 B", "4 KiB", "256 MiB"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------
# Numbers.


def median(values):
    return statistics.median(values) if values else None


def percentile(sorted_values, p):
    """The p-th percentile (0-100) of an already sorted list, nearest
    rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1,
                   int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def summary(sorted_values):
    """n, min, median, p90, p99 and max of an already sorted list of ns,
    under the names the JSON uses."""
    xs = sorted_values
    return {
        "n": len(xs),
        "min_ns": xs[0],
        "median_ns": percentile(xs, 50),
        "p90_ns": percentile(xs, 90),
        "p99_ns": percentile(xs, 99),
        "max_ns": xs[-1],
    }


def fmt_rate(x):
    """A rate per second: 1.23 M/s, 45.6 k/s, 12.3 /s."""
    if x is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}/s"
    return f"{x:.3g} /s"


def fmt_bytes_rate(x):
    """Bytes per second as GB/s, MB/s, kB/s (powers of 10)."""
    if x is None:
        return "n/a"
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6),
                        ("kB/s", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} B/s"


def fmt_ns(ns):
    """Nanoseconds as ns, us, ms or s."""
    if ns is None:
        return "n/a"
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} us"
    return f"{ns:.3g} ns"


def fmt_ratio(r):
    """A ratio as "x3.21", "x412", "x230k", "x1/412" (or "n/a")."""
    if r is None:
        return "n/a"
    if 0 < r < 0.01:
        return "x1/" + fmt_ratio(1 / r)[1:]
    if r >= 1e6:
        return f"x{r / 1e6:.3g}M"
    if r >= 1e4:
        return f"x{r / 1e3:.3g}k"
    if r >= 100:
        return f"x{r:.0f}"
    if r >= 10:
        return f"x{r:.1f}"
    return f"x{r:.2f}"


# Every line the command line prints fits a terminal this wide.
WIDTH = 120


def table(headers, rows, width=WIDTH):
    """rows (sequences of str) under headers, as text: the first column
    left-aligned, the others right-aligned.  When that is wider than
    `width`, the other columns are spread over several tables, one under
    the other, each repeating the first column."""
    widths = [max(len(str(r[i])) for r in [headers, *rows])
              for i in range(len(headers))]
    groups = _column_groups(widths, width)

    def line(cells, cols):
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(cells[i]).rjust(widths[i]) for i in cols]
        return " | ".join(out).rstrip()

    parts = []
    for cols in groups:
        parts.append("\n".join(
            [line(headers, cols),
             "-+-".join("-" * widths[i] for i in [0, *cols]),
             *(line(r, cols) for r in rows)]))
    return "\n\n".join(parts)


def _column_groups(widths, width):
    """The columns after the first, in as few consecutive groups as fit
    `width` beside the first column, with about as many columns in each
    (a table of 12 sizes splits 6 + 6, not 11 + 1)."""
    cols = list(range(1, len(widths)))
    if not cols:
        return [[]]

    def fits(group):
        return widths[0] + sum(3 + widths[i] for i in group) <= width

    for n in range(1, len(cols) + 1):
        size, extra = divmod(len(cols), n)
        groups, start = [], 0
        for k in range(n):
            end = start + size + (1 if k < extra else 0)
            groups.append(cols[start:end])
            start = end
        if all(fits(g) for g in groups if len(g) > 1):
            return groups
    return [[i] for i in cols]


def wrap(text, width=WIDTH, indent="    "):
    """text (one paragraph) folded to `width` columns, the lines after the
    first indented."""
    return textwrap.fill(text, width, subsequent_indent=indent,
                         break_on_hyphens=False)


def problems(res):
    """The skipped contenders and the errors of an experiment's result,
    as lines folded to the terminal."""
    out = [wrap(f"skipped {name}: {why}")
           for name, why in res.get("skipped", {}).items()]
    out += [wrap(f"ERROR {name}: {why}")
            for name, why in res.get("errors", {}).items()]
    return out


# ---------------------------------------------------------------------------
# Timing loops, for code timed in the calling thread (the scripts in
# bench/).

clock = time.perf_counter_ns


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
    alternating order, so that a change of CPU speed during the run hits
    every contender alike.  Returns a list per loop of ns per iteration,
    one per round."""
    out = [[] for _ in loops]
    order = list(range(len(loops)))
    for _ in range(repeat):
        for i in order:
            out[i].append(loops[i](number) / number)
        order.reverse()
    return out


def paired_ratio(num, den):
    """Median over rounds of num[i] / den[i]: the ratio of two contenders
    timed side by side, robust to the CPU changing speed between rounds
    (None without rounds)."""
    if not num or not den:
        return None
    return statistics.median(a / b for a, b in zip(num, den))


# ---------------------------------------------------------------------------
# The machine.


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def empty_loop_ns(n=200_000, repeat=5):
    """Median cost of one iteration of an empty `for` loop: a gauge of how
    fast the CPU we run on is right now (this machine's vCPUs change
    speed)."""
    times = []
    for _ in range(repeat):
        it = itertools.repeat(None, n)
        t0 = time.perf_counter_ns()
        for _ in it:
            pass
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / n


def _meminfo_total():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info():
    """What the figures depend on: Python version and build flags,
    tpshare, the CPU, the OS, and a gauge of the CPU's speed."""
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "python": sys.version.replace("\n", " "),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "cflags": sysconfig.get_config_var("CFLAGS"),
        "config_args": sysconfig.get_config_var("CONFIG_ARGS"),
        "py_debug": bool(sysconfig.get_config_var("Py_DEBUG")),
        "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "tpshare": tpshare.__version__,
        "tpshare_path": os.path.dirname(tpshare.__file__),
        "tpshare_build_env": {k: v for k, v in os.environ.items()
                              if k in ("TPSHARE_DEBUG", "TPSHARE_SANITIZE",
                                       "TPSHARE_WERROR")},
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "memory_bytes": _meminfo_total(),
        "loadavg": load,
        "empty_loop_ns": round(empty_loop_ns(), 2),
        "line_round_trip_ns": line_round_trip_ns(),
    }


# On the VM measured, the core-to-core gauge sits either near 60-140 ns
# (the two vCPUs close together on the host) or near 330-600 ns (far
# apart), switching several times a minute; nothing in between.
FAR_NS = 200


def quick_gauge(n=5000):
    """A short core-to-core gauge (by default 5,000 round trips,
    0.3-3 ms), taken before and after a timed trial: ns per round trip,
    or None with one CPU."""
    from tpshare.bench import _probes
    g = _probes._line_round_trip(n)
    return None if g is None else round(g, 1)


def mode_of(gauges):
    """"near" when every gauge taken around a trial is below FAR_NS,
    "far" when every one is at or above it, else None (a switch during
    the trial, or no gauge)."""
    if not gauges or None in gauges:
        return None
    if max(gauges) < FAR_NS:
        return "near"
    if min(gauges) >= FAR_NS:
        return "far"
    return None


def line_round_trip_ns():
    """The core-to-core gauge: ns per round trip of one cache line
    between two threads pinned to two CPUs (median of 3), or None with
    one CPU.  Every hand-over between two interpreters pays it at least
    once; on a virtual machine it moves as the host moves the vCPUs."""
    got = [quick_gauge(20_000) for _ in range(3)]
    return None if None in got else round(statistics.median(got), 1)


def machine_text(info, width=WIDTH):
    """The machine description as lines for the terminal, each folded to
    `width` columns."""
    mem = info.get("memory_bytes")
    lines = [
        f"date:     {info['date']}",
        f"python:   {info['python']}",
        f"          {info['executable']}",
        f"CFLAGS:   {info['cflags']}",
        f"config:   {info['config_args'] or '(none)'}",
        f"tpshare:  {info['tpshare']} ({info['tpshare_path']})",
        f"machine:  {info['platform']}",
        f"cpu:      {info['cpu']}, {info['cores']} cores, affinity "
        f"{info['affinity']}"
        + (f", {mem / (1 << 30):.0f} GiB" if mem else ""),
        f"load:     {info['loadavg']}",
        f"empty loop iteration: {info['empty_loop_ns']} ns (a gauge of the "
        "CPU's speed now; compare only within one run)",
        f"cache line round trip between two CPUs: "
        f"{info['line_round_trip_ns']} ns (the core-to-core gauge)",
    ]
    return "\n".join(textwrap.fill(x, width, subsequent_indent=" " * 10,
                                   break_on_hyphens=False)
                     for x in lines)


# ---------------------------------------------------------------------------
# glibc's malloc.

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def steady_malloc():
    """Fix glibc's mmap and trim thresholds at the largest values its
    dynamic adjustment reaches in a long-running process (32 MiB, 64 MiB),
    here with mallopt() and in child processes through the environment.

    Otherwise whether a 64 KiB-16 MiB copy made by one thread and freed
    by another is handed back to the kernel and page-faulted in again for
    every message depends on the history of the process, and the same
    run of a copying transport moves by up to 20x from one run to the
    next (seen with str payloads of 64 KiB).  Returns a line for the
    report."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return "malloc: not glibc, left as it is"
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
            and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)):
        return "malloc: mallopt() failed, glibc defaults in force"
    return (f"malloc: glibc mmap threshold {fmt_size(MMAP_THRESHOLD)}, trim "
            f"threshold {fmt_size(TRIM_THRESHOLD)} (their largest dynamic "
            "values; --malloc-defaults to keep glibc's start-up values)")


# ---------------------------------------------------------------------------
# Memory: resident set size, which sees raw (malloc) memory that
# tracemalloc does not.


def rss_bytes():
    """VmRSS of this process from /proc/self/status, in bytes (None where
    there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# Progress.


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line
    per tenth of the way otherwise (CI logs)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total = max(1, total)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.t0 = time.monotonic()
        self.last_decile = -1
        self.label = ""

    def add_total(self, n):
        self.total += n

    def step(self, label=None, n=1):
        self.done = min(self.total, self.done + n)
        if label is not None:
            self.label = label
        self._draw()

    def note(self, label):
        self.label = label
        self._draw()

    def _draw(self):
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.monotonic() - self.t0
        if self.tty:
            width = 30
            fill = int(frac * width)
            bar = "#" * fill + "." * (width - fill)
            text = (f"\r[{bar}] {frac * 100:3.0f}% {elapsed:5.0f}s "
                    f"{self.label}")[:110]
            self.stream.write(text.ljust(110))
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile > self.last_decile:
                self.last_decile = decile
                self.stream.write(f"[{frac * 100:3.0f}% {elapsed:5.0f}s] "
                                  f"{self.label}\n")
                self.stream.flush()

    def clear(self):
        """Erase the bar (before printing a table)."""
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()

    def finish(self):
        self.done = self.total
        if self.tty:
            self.clear()
