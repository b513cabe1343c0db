"""The command line: ``python -m tpshare.bench [experiment ...] [options]``.

Runs the experiments named (all by default) in one process, with a
progress bar on stderr; prints the machine description and the tables of
each experiment (tpshare's figures beside each baseline's, and the
ratios; every line at most 120 columns, see render()); writes
``results.json``, ``summary.txt`` and a PNG per experiment into the
results folder (``./results/<timestamp>/`` or ``--out``).  A baseline
that does not exist on this Python is reported as skipped.  Exit status:
0, 1 if a contender failed while measuring, 2 for a usage error.
"""

import argparse
import datetime
import json
import os
import sys
import time

from . import EXPERIMENTS, common, contenders as cts, runner

FORMAT_VERSION = 1

# Every experiment (tpshare.bench.EXPERIMENTS).
ALL_EXPERIMENTS = EXPERIMENTS


class Settings:
    """What a run measures and for how long (full or --quick)."""

    def __init__(self, args):
        q = args.quick
        self.quick = q
        self.sizes = [common.SIZES[s] for s in args.sizes] if args.sizes \
            else ([64, 64 << 10, 4 << 20] if q
                  else [64, 128, 256, 512, 1 << 10, 2 << 10, 4 << 10,
                        8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20,
                        4 << 20, 16 << 20, 64 << 20, 256 << 20])
        self.sizes = sorted(set(self.sizes))
        # str payloads up to this size: 2048 distinct ones fit in 128 MiB
        # (see throughput.payloads); larger str only repeat what bytes
        # show.
        self.str_max = 64 << 10
        self.repeat = args.repeat or (1 if q else 5)
        self.trial_seconds = 0.03 if q else 0.2
        self.min_n = 1 if q else 2
        self.max_n = 50_000 if q else 300_000
        self.latency_n = 1_000 if q else 20_000
        self.latency_warmup = 50 if q else 500
        self.wake_n = 100 if q else 1_000
        self.poll_n = 10 if q else 100
        self.release_n = 300 if q else 5_000
        self.work_seconds = 0.05 if q else 0.5
        self.max_workers = max(2, os.cpu_count() or 1) if not args.workers \
            else args.workers
        self.runner = runner.choose(args.runner)
        self.progress = None

    def as_dict(self):
        return {k: v for k, v in vars(self).items() if k != "progress"}


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m tpshare.bench",
        description="Compare tpshare's MemChannel and Object Channel with "
                    "CPython's own queues and channels, queue.Queue between "
                    "threads, multiprocessing pipes and shared memory, on "
                    "real isolated interpreters: throughput against "
                    "payload size, ping-pong latency, release latency, "
                    "parallel scaling and memory per queued message.",
        epilog="Valid sizes: " + ", ".join(common.SIZE_NAMES)
               + ".  Contenders: " + ", ".join(cts.NAMES) + ".")
    p.add_argument("experiments", nargs="*", default=None,
                   choices=ALL_EXPERIMENTS, metavar="experiment",
                   help="what to run (default: all): "
                        + ", ".join(ALL_EXPERIMENTS))
    p.add_argument("--quick", action="store_true",
                   help="a smoke run, under 2 minutes: fewer sizes, "
                        "shorter trials, one round (noisy figures)")
    p.add_argument("--out", metavar="DIR",
                   help="results folder (default: ./results/<timestamp>)")
    p.add_argument("--sizes", nargs="+", type=common.size_name,
                   choices=common.SIZE_NAMES, metavar="SIZE",
                   help="payload sizes for throughput, from: "
                        + ", ".join(common.SIZE_NAMES))
    p.add_argument("--contenders", nargs="+", choices=cts.NAMES,
                   metavar="NAME",
                   help="only these contenders, from: "
                        + ", ".join(cts.NAMES))
    p.add_argument("--repeat", type=int, metavar="N",
                   help="rounds per figure (median reported; default 5, "
                        "1 with --quick)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="scaling: up to N workers (default: the number of "
                        "CPUs, at least 2)")
    p.add_argument("--runner", choices=runner.RUNNERS, default="auto",
                   help="how isolated interpreters are made: "
                        "tpshare.Interpreter when available (auto), or the "
                        "standard library's")
    p.add_argument("--malloc-defaults", action="store_true",
                   help="leave glibc's malloc thresholds at their start-up "
                        "values (default: fix them at the values a "
                        "long-running process reaches; see the report)")
    p.add_argument("--no-plots", action="store_true",
                   help="do not draw PNGs")
    p.add_argument("--replot", metavar="JSON",
                   help="only redraw the PNGs of an earlier results.json "
                        "(into its folder)")
    p.add_argument("--list", action="store_true",
                   help="list experiments and contenders with their "
                        "availability, and exit")
    return p


def _list():
    print(list_text())
    return 0


def list_text():
    """What --list prints: the experiments, then each contender with its
    availability, then what each contender is."""
    rows, notes = [], []
    for c in cts.ALL:
        why = c.unavailable()
        used = [e for e, names in (("throughput", cts.THROUGHPUT),
                                   ("latency", cts.LATENCY),
                                   ("memory", _memory_names()))
                if c.name in names]
        rows.append([c.name, "tpshare" if c.ours else "baseline",
                     "yes" if why is None else f"no: {why}",
                     ",".join(used)])
        notes.append(common.wrap(f"{c.name} ({c.label}): {c.note}"))
    return "\n".join(
        [common.wrap("experiments: " + ", ".join(ALL_EXPERIMENTS)), "",
         common.table(["contender", "side", "available", "in"], rows), "",
         "what each contender is:"] + notes)


def _memory_names():
    from . import memory
    return memory.CONTENDERS


def _select(names, wanted):
    return [n for n in names if wanted is None or n in wanted]


def _headline(doc):
    """A few figures for the end of the run: ours against each baseline."""
    out = []
    ex = doc["experiments"]
    labels = {c.name: c.label for c in cts.ALL}
    if "throughput" in ex:
        from . import throughput
        res = ex["throughput"]
        rat = throughput.ratios(res)
        sizes = res["sizes"]
        picks = [("int/8", "one int")]
        if sizes:
            picks += [(f"bytes/{sizes[0]}",
                       f"bytes {common.fmt_size(sizes[0])}"),
                      (f"bytes/{sizes[-1]}",
                       f"bytes {common.fmt_size(sizes[-1])}")]
        for key, label in picks:
            for ref in ("channel", "channel-batch", "memchannel"):
                r = rat.get(key, {}).get(ref)
                if not r:
                    continue
                parts = ", ".join(f"{labels[n]} {common.fmt_ratio(v)}"
                                  for n, v in r.items() if v is not None
                                  and not cts.BY_NAME[n].ours)
                out.append(f"throughput {label}: {labels[ref]} vs {parts}")
    if "latency" in ex:
        st = ex["latency"]["stats"]
        if "channel" in st:
            ref = st["channel"]
            parts = ", ".join(
                f"{labels[n]} {common.fmt_ns(x['median_ns'])} "
                f"({common.fmt_ratio(x['median_ns'] / ref['median_ns'])})"
                for n, x in st.items() if n != "channel")
            out.append(f"latency median: Channel "
                       f"{common.fmt_ns(ref['median_ns'])}; {parts}")
    if "release" in ex:
        st = ex["release"]["stats"]
        out.append("release: " + ", ".join(
            f"{m} {common.fmt_ns(x['median_ns'])} median, "
            f"{common.fmt_ns(x['p99_ns'])} p99" for m, x in st.items()))
    if "scaling" in ex:
        from . import scaling
        res = ex["scaling"]
        k = str(res["workers"][-1])
        if scaling.no_parallelism(res) is not None:
            out.append("scaling: no parallelism on this host (see above)")
        elif res["kinds"]:
            out.append(f"scaling at {k} workers: " + ", ".join(
                f"{kind} x{res['results'][kind][k]['speedup']:.2f}"
                for kind in res["kinds"]))
    if "shm" in ex:
        small = ex["shm"]["small"]
        for ours in ("shm", "shm-batch"):
            if ours not in small:
                continue
            rate = small[ours]["median_msgs_per_s"]
            parts = ", ".join(
                f"{base} {common.fmt_ratio(rate / small[base]['median_msgs_per_s'])}"
                for base in ("mp-queue", "faster-fifo") if base in small)
            out.append(f"between processes, 64 B, {ours}: "
                       f"{common.fmt_rate(rate)}; vs {parts}")
    if "pep734" in ex and ex["pep734"]["ratio"] is not None:
        out.append(f"PEP 734 pipeline: tpshare.interpreters vs CPython's "
                   f"x{ex['pep734']['ratio']:.1f}")
    if "memory" in ex:
        pts = ex["memory"]["points"]
        for key in ("int/8", "bytes/64"):
            if key in pts:
                out.append(f"memory per queued {key}: " + ", ".join(
                    f"{labels[n]} {r['bytes_per_message']:.0f} B"
                    for n, r in pts[key].items()))
    return out


def _replot(path):
    from . import plots
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for p in plots.draw_all(doc, os.path.dirname(os.path.abspath(path))):
        print(p)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        return _list()
    if args.replot:
        return _replot(args.replot)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        settings = Settings(args)
    except RuntimeError as exc:
        parser.error(str(exc))
    experiments = args.experiments or list(ALL_EXPERIMENTS)
    experiments = [e for e in ALL_EXPERIMENTS if e in experiments]

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("results", stamp)
    os.makedirs(out, exist_ok=True)

    from . import memory
    modules = _modules()
    names = {
        "throughput": _select(cts.THROUGHPUT, args.contenders),
        "latency": _select(cts.LATENCY, args.contenders),
        "memory": _select(memory.CONTENDERS, args.contenders),
        "release": None,
        "scaling": None,
        "shm": None,
        "pep734": None,
    }

    malloc = ("malloc: glibc defaults (--malloc-defaults)"
              if args.malloc_defaults else common.steady_malloc())
    machine = common.machine_info()
    machine["malloc"] = malloc
    doc = {
        "format": FORMAT_VERSION,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "machine": machine,
        "runner": runner.describe(settings.runner),
        "settings": settings.as_dict(),
        "experiments": {},
        "skipped": {},
        "errors": {},
    }
    header = header_text(doc, os.path.abspath(out))
    print(header, flush=True)
    summary = [header]

    settings.progress = common.Progress(
        sum(modules[e].steps(settings, names[e]) for e in experiments))
    t_start = time.monotonic()
    failed = False
    for exp in experiments:
        mod = modules[exp]
        t0 = time.monotonic()
        settings.progress.note(f"{exp}: starting")
        try:
            res = mod.run(settings, names[exp])
        except Exception as exc:  # noqa: BLE001 - one experiment failing
            import traceback     # must not lose the others' results
            settings.progress.clear()
            traceback.print_exc()
            doc["errors"][exp] = f"{type(exc).__name__}: {exc}"
            summary.append("\n" + common.wrap(f"ERROR in {exp}: {exc}"))
            failed = True
            continue
        res["duration_s"] = round(time.monotonic() - t0, 1)
        doc["experiments"][exp] = res
        if res.get("skipped"):
            doc["skipped"][exp] = res["skipped"]
        if res.get("errors"):
            doc["errors"][exp] = res["errors"]
            failed = True
        settings.progress.clear()
        text = experiment_text(exp, res)
        print(text, flush=True)
        summary.append(text)
    settings.progress.finish()

    doc["duration_s"] = round(time.monotonic() - t_start, 1)
    doc["machine_after"] = {"empty_loop_ns": round(common.empty_loop_ns(),
                                                   2),
                            "line_round_trip_ns": common.line_round_trip_ns(),
                            "loadavg": os.getloadavg()}
    doc["headline"] = _headline(doc)
    tail = [tail_text(doc)]

    json_path = os.path.join(out, "results.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    written = [json_path]
    if not args.no_plots:
        try:
            from . import plots
            written += plots.draw_all(doc, out)
        except ImportError as exc:
            tail.append("\n" + common.wrap(
                f"no plots: {exc} (pip install matplotlib, or install "
                "tpshare[bench])"))
    summary_path = os.path.join(out, "summary.txt")
    written.append(summary_path)
    tail.append("\nwritten:\n" + "\n".join("  " + p for p in written))
    text = "\n".join(tail)
    print(text)
    summary.append(text)
    with open(summary_path, "w", encoding="utf-8") as f:
        f.write("\n".join(summary) + "\n")
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# The text of a run, from its results document alone (every line at most
# common.WIDTH columns).


def header_text(doc, out=None):
    """The machine and the run's settings, printed before the first
    experiment."""
    machine = doc["machine"]
    lines = ["tpshare comparison experiments"
             + (" (--quick: smoke run, noisy figures)" if doc.get("quick")
                else ""),
             common.machine_text(machine)]
    if machine.get("malloc"):
        lines.append(common.wrap(machine["malloc"]))
    lines.append(common.wrap(f"interpreters: {doc['runner']}"))
    if out is not None:
        lines.append(common.wrap(f"results: {out}"))
    return "\n".join(lines)


def _modules():
    """The experiments' modules by name (imported when first needed)."""
    from . import (latency, memory, pep734, release, scaling, shm,
                   throughput)
    return {"throughput": throughput, "latency": latency,
            "release": release, "scaling": scaling, "memory": memory,
            "shm": shm, "pep734": pep734}


def experiment_text(exp, res):
    """An experiment's tables and how long it took."""
    return (_modules()[exp].report(res)
            + f"\n({exp}: {res['duration_s']} s)")


def tail_text(doc):
    """The headline figures, what was skipped and the gauges at the end."""
    tail = ["\nHeadline (ratios above 1: tpshare better)"]
    tail += [common.wrap("  " + h, indent="      ")
             for h in doc.get("headline", [])]
    if doc["skipped"]:
        tail.append("\nSkipped (not available on this Python or build):")
        for exp, sk in doc["skipped"].items():
            for name, why in sk.items():
                tail.append(common.wrap(f"  {exp}: {name}: {why}",
                                        indent="      "))
    machine, after = doc["machine"], doc.get("machine_after")
    if after:
        tail.append("\n" + common.wrap(
            f"CPU gauge at the end: {after['empty_loop_ns']} ns per empty "
            f"loop iteration (start: {machine['empty_loop_ns']} ns); "
            f"core-to-core gauge {after['line_round_trip_ns']} ns (start: "
            f"{machine['line_round_trip_ns']} ns); run took "
            f"{doc['duration_s']} s"))
    return "\n".join(tail)


def render(doc, out=None):
    """The whole text of a run (what it printed, less the progress bar and
    the list of files written)."""
    parts = [header_text(doc, out)]
    for exp, res in doc["experiments"].items():
        parts.append(experiment_text(exp, res))
    for exp, err in doc["errors"].items():
        if exp not in doc["experiments"]:
            parts.append("\n" + common.wrap(f"ERROR in {exp}: {err}"))
    parts.append(tail_text(doc))
    return "\n".join(parts)
