"""Parallel scaling of CPU-bound Python: 1..N workers each run the same
pure-Python loop (``_remote.cpu_work``, about the target time on one
idle core), as isolated interpreters with their own GIL, as threads of
the main interpreter (one GIL), and as processes.

Workers are started and warmed up first and wait for work; a round sends
the work to the first k workers and times from the first send until the
last worker has finished (stamped by the workers with
``time.perf_counter()``), while the main thread waits idle.  Speed-up at
k = k x (time of 1 worker) / (time of k workers): the work grows with k,
so perfect scaling gives k.  Per-worker efficiency compares each
worker's own time (its start and end stamps) alone and among k: it
shows whether workers slow each other down, apart from the wall clock,
which a slow or busy vCPU also stretches.  Kinds alternate within each
round, and the median over rounds is reported.
"""

import multiprocessing
import threading
import time

import tpshare

from . import _remote, common, runner

KINDS = ("interpreters", "threads", "processes")


class _Group:
    """k workers of one kind, waiting for ("work", n)."""

    def __init__(self, kind, k, runner_name):
        self.kind = kind
        self.workers = []
        self.ctls = []
        if kind == "processes":
            ctx = multiprocessing.get_context("spawn")
            self.res = []
            for _ in range(k):
                ctl_in, ctl_out = ctx.Pipe(duplex=False)
                res_in, res_out = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_remote.serve_work_in_process,
                                args=(ctl_in, res_out), daemon=True)
                p.start()
                ctl_in.close()
                res_out.close()
                self.workers.append(p)
                self.ctls.append(ctl_out)
                self.res.append(res_in)
            return
        self.res_chan = tpshare.Channel()
        for _ in range(k):
            ctl = tpshare.Channel()
            self.ctls.append(ctl)
            if kind == "interpreters":
                w = runner.new_worker(runner_name)
                job = w.call("serve_work_in_interpreter", ctl.id,
                             self.res_chan.id)
                self.workers.append((w, job))
            else:
                t = threading.Thread(target=_remote.serve_work,
                                     args=(ctl, self.res_chan), daemon=True)
                t.start()
                self.workers.append(t)

    def _results(self, k, timeout=600):
        if self.kind == "processes":
            return [self.res[i].recv() for i in range(k)]
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < k:
            try:
                out.append(self.res_chan.recv(timeout=1))
            except tpshare.ChannelEmpty:
                if self.kind == "interpreters":
                    for _, job in self.workers:
                        if job.done():
                            job.result(0)
                            raise RuntimeError("a worker ended")
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not answer")
        return out

    def round(self, k, n):
        """(wall-clock seconds for k workers to each run cpu_work(n),
        [each worker's own seconds])."""
        t0 = time.perf_counter()
        for ctl in self.ctls[:k]:
            ctl.send(("work", n))
        stamps = self._results(k)
        return (max(end for _, end in stamps) - t0,
                [end - start for start, end in stamps])

    def close(self):
        for ctl in self.ctls:
            try:
                ctl.send(None)
            except Exception:  # noqa: BLE001
                pass
        for w in self.workers:
            if self.kind == "interpreters":
                worker, job = w
                try:
                    job.result(60)
                finally:
                    worker.close()
            else:
                w.join(60)


def calibrate(seconds):
    """n such that cpu_work(n) takes about `seconds` here."""
    n = 10_000
    while True:
        t0 = time.perf_counter()
        _remote.cpu_work(n)
        t = time.perf_counter() - t0
        if t > 0.02:
            return max(1000, int(n * seconds / t))
        n *= 4


def steps(ctx, names=None):
    return len(KINDS) * (1 + ctx.repeat * ctx.max_workers)


def run(ctx, names=None):
    ks = list(range(1, ctx.max_workers + 1))
    n = calibrate(ctx.work_seconds)
    groups, errors = {}, {}
    times = {kind: {k: [] for k in ks} for kind in KINDS}
    own = {kind: {k: [] for k in ks} for kind in KINDS}
    try:
        for kind in KINDS:
            ctx.progress.step(f"scaling: starting {ctx.max_workers} {kind}")
            try:
                g = groups[kind] = _Group(kind, ctx.max_workers, ctx.runner)
                g.round(len(ks), max(1000, n // 20))       # warm-up
            except Exception as exc:  # noqa: BLE001 - reported
                errors[kind] = str(exc)
                bad = groups.pop(kind, None)
                if bad is not None:
                    bad.close()
        for r in range(ctx.repeat):
            for k in ks:
                kinds = [x for x in KINDS if x in groups]
                for kind in (kinds if (r + k) % 2 == 0 else kinds[::-1]):
                    ctx.progress.step(f"scaling {kind} x{k} round {r + 1}")
                    wall, each = groups[kind].round(k, n)
                    times[kind][k].append(wall)
                    own[kind][k].append(sum(each) / len(each))
    finally:
        for g in groups.values():
            try:
                g.close()
            except Exception:  # noqa: BLE001
                pass
    out = {}
    for kind in groups:
        t1 = common.median(times[kind][1])
        o1 = common.median(own[kind][1])
        rows = {}
        for k in ks:
            tk = common.median(times[kind][k])
            ok = common.median(own[kind][k])
            rows[str(k)] = {"seconds": times[kind][k], "median_s": tk,
                            "speedup": k * t1 / tk,
                            "efficiency": t1 / tk,
                            "worker_seconds": own[kind][k],
                            "worker_efficiency": o1 / ok}
        out[kind] = rows
    return {
        "method": __doc__.strip(),
        "runner": runner.describe(ctx.runner),
        "work_iterations": n,
        "work_seconds_target": ctx.work_seconds,
        "workers": ks,
        "kinds": list(groups),
        "results": out,
        "skipped": {},
        "errors": errors,
    }


# Speed-up below which k workers are taken to have had no more than one
# CPU between them: a host that gives the run a single CPU's worth of time
# gets about x1 whatever the design, and ratios between kinds then say
# nothing about them.
PARALLEL = 1.25


def no_parallelism(res):
    """A sentence saying that the host gave no parallelism, when neither
    the interpreters nor the processes reached PARALLEL at any worker
    count above 1; else None."""
    ks = [k for k in res["workers"] if k > 1]
    kinds = [k for k in ("interpreters", "processes") if k in res["kinds"]]
    if not ks or not kinds:
        return None
    best = max(res["results"][kind][str(k)]["speedup"]
               for kind in kinds for k in ks)
    if best >= PARALLEL:
        return None
    who = " nor ".join(kinds)
    return (f"This host gave the run no parallelism: with up to {ks[-1]} "
            f"workers neither {who} got more done than one worker alone "
            f"(at best x{best:.2f}), so this run cannot tell how they "
            f"scale; the speed-ups are left out.")


def report(res):
    lines = ["\n" + common.wrap(
        f"Parallel scaling, CPU-bound pure Python "
        f"({res['work_iterations']} iterations per worker; interpreters: "
        f"{res['runner']})")]
    kinds = res["kinds"]
    r = res["results"]
    verdict = no_parallelism(res)
    if verdict is not None:
        lines.append(common.wrap(verdict))
        lines.append(common.table(
            ["workers"] + [f"{kind}: time" for kind in kinds],
            [[str(k)] + [f"{r[kind][str(k)]['median_s']:.3f} s"
                         for kind in kinds] for k in res["workers"]]))
        lines += common.problems(res)
        return "\n".join(lines)
    others = [o for o in ("threads", "processes")
              if o in r and "interpreters" in r]
    rows = []
    for k in res["workers"]:
        key = str(k)
        row = [str(k)]
        for kind in kinds:
            x = r[kind][key]
            row.append(f"{x['median_s']:.3f} s x{x['speedup']:.2f} "
                       f"{x['worker_efficiency'] * 100:.0f}%")
        ti = r["interpreters"][key]["seconds"] if others else []
        for other in others:
            row.append(common.fmt_ratio(common.paired_ratio(
                r[other][key]["seconds"], ti)))
        rows.append(row)
    lines.append(common.table(
        ["workers"] + kinds + [f"vs {o}" for o in others], rows))
    lines.append(common.wrap(
        "(each cell: wall time, speed-up = k x T(1) / T(k), perfect = k, "
        "and per-worker efficiency = one worker's own time alone / its own "
        "time among k, 100% = the workers do not slow each other down; "
        "\"vs\": the other kind's wall time / the interpreters', above 1: "
        "interpreters faster)"))
    lines += common.problems(res)
    return "\n".join(lines)
