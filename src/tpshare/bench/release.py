"""Release latency: how soon the sender learns that the receiver let go of
a zero-copy view.

The main interpreter sends a 4 KiB bytearray through a MemChannel to an
isolated interpreter, which receives the view, stamps
``time.perf_counter_ns()`` and releases it.  The main thread observes the
release through the ``Tracker`` that ``send()`` returned, either parked
in ``tracker.wait()`` or spinning on ``tracker.released``; the latency is
the time from the receiver's stamp to the sender seeing it.

Baseline: what a program does without trackers (and what CPython offers,
whose memoryview sharing has no release notification at all): the
receiver releases the view and sends an acknowledgement through a
tpshare Channel, stamped just before sending; the sender waits in
``recv()``.  Rounds alternate between the three ways.
"""

import time

import tpshare

from . import common, runner

MODES = ("tracker.wait()", "poll tracker.released", "ack via Channel")


def _stats(xs):
    xs = sorted(xs)
    out = common.summary(xs)
    out["quantiles_ns"] = [common.percentile(xs, i / 10)
                           for i in range(1001)]
    return out


def steps(ctx, names=None):
    return ctx.repeat * len(MODES) + 1


def run(ctx, names=None):
    ctx.progress.step("release: starting")
    mem = tpshare.MemChannel(16)
    ack = tpshare.Channel(16)
    ctl, res = tpshare.Channel(), tpshare.Channel()
    worker = runner.new_worker(ctx.runner)
    job = worker.call("serve_release", ctl.id, res.id, mem.id, ack.id)
    buf = bytearray(4096)
    samples = {m: [] for m in MODES}
    clock = time.perf_counter_ns

    def reply():
        while True:
            try:
                return res.recv(timeout=1)
            except tpshare.ChannelEmpty:
                if job.done():
                    job.result(0)
                    raise RuntimeError("the release loop ended")

    def by_tracker(n, poll):
        ctl.send(("release", n))
        send, recv = mem.send, res.recv
        out = []
        for _ in range(n):
            tr = send(buf)
            if poll:
                while not tr.released:
                    pass
            elif not tr.wait(30):
                raise RuntimeError("a view was not released in 30 s")
            t_seen = clock()
            out.append(t_seen - recv())
        reply()
        return out

    def by_ack(n):
        ctl.send(("ack", n))
        send, recv = mem.send, ack.recv
        out = []
        for _ in range(n):
            send(buf)
            t_sent = recv()
            out.append(clock() - t_sent)
        reply()
        return out

    runs = {
        MODES[0]: lambda n: by_tracker(n, False),
        MODES[1]: lambda n: by_tracker(n, True),
        MODES[2]: by_ack,
    }
    try:
        for m in MODES:            # warm-up
            runs[m](ctx.latency_warmup)
        n = max(1, ctx.release_n // ctx.repeat)
        for r in range(ctx.repeat):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for m in order:
                ctx.progress.step(f"release {m} round {r + 1}")
                samples[m] += runs[m](n)
    finally:
        ctl.send(None)
        try:
            job.result(30)
        finally:
            worker.close()
            mem.close()
            ack.close()
    stats = {m: _stats(xs) for m, xs in samples.items() if xs}
    return {"method": __doc__.strip(), "modes": list(MODES),
            "stats": stats, "skipped": {}, "errors": {}}


def report(res):
    st = res["stats"]
    base = st.get(MODES[2])
    lines = ["\nRelease latency: receiver releases a MemChannel view -> "
             "sender sees it"]
    rows = []
    for m in res["modes"]:
        if m not in st:
            continue
        x = st[m]
        rows.append([m, str(x["n"])]
                    + [common.fmt_ns(x[k]) for k in
                       ("min_ns", "median_ns", "p90_ns", "p99_ns")]
                    + [common.fmt_ratio(x["median_ns"] / base["median_ns"])
                       if base else "n/a",
                       common.fmt_ratio(x["p99_ns"] / base["p99_ns"])
                       if base else "n/a"])
    lines.append(common.table(
        ["sender observes by", "n", "min", "median", "p90", "p99",
         "median / ack's", "p99 / ack's"], rows))
    lines.append(common.wrap(
        "(below 1: the tracker is faster than an explicit acknowledgement "
        "message; CPython has no release notification to compare)"))
    lines += common.problems(res)
    return "\n".join(lines)
