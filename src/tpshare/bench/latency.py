"""Blocking ping-pong latency: the main thread sends an 8-byte bytes
object, the far side (an isolated interpreter, a thread or a child
process) receives it and answers with an 8-byte bytes object of its own;
the main thread times each round trip with ``time.perf_counter_ns()``.
Each side cycles through 2048 distinct objects.

Both sides wait the way each transport waits: tpshare spins briefly and
then parks on a semaphore (``spin=0`` parks at once); ``queue.Queue``
waits on a condition variable; a pipe blocks in ``read()``; CPython's
queue and channel have no blocking call in C, so they are shown twice:
retried in a busy loop (the best case, a core burnt per waiting side),
and with the 10 ms sleep of their Python wrappers' blocking ``get()`` /
``recv()``.  Memoryviews received through MemChannel are released
after the round trip's clock stops.  Warm-up round trips are dropped;
rounds alternate between contenders.

Then the parked wake-up, one way: the main thread sleeps 1 ms (longer
than tpshare's longest spin window, so the far side has parked), sends
its ``perf_counter_ns()`` in the message, and the far side takes the
clock as soon as it has the item.  Beside it, the machine's floor in the
same run: a bare POSIX semaphore posted to a parked thread, the same
pause, no Python (``tpshare.bench._probes._wake_floor``; its poster
parks at once, so the woken thread never waits for the CPU); and the
Python-level floor: the same loops as the Channel's, in the same two
interpreters, with a bare semaphore in place of the channel (the stamp
stored beside it, the poster yielding its CPU after the post as a
Channel's send does after waking a parked receiver;
``tpshare.bench._probes._sem_post`` / ``_sem_wait``).
"""

import time

from . import _remote, common, contenders as cts

PINGS = _remote.distinct_bytes(8)
# Parked wake-up: one-way, after the far side has waited this long (longer
# than tpshare's longest spin window, 250 us, so it has parked).
WAKE_PAUSE = 0.001
WAKE = ("channel", "memchannel", "cpython-queue-poll", "threads", "mp-pipe")
QUANTILES = 1000   # the JSON keeps the distribution as 1001 quantiles


def _polls(c):
    """Whether c's blocking calls poll every 10 ms (fewer round trips)."""
    return c.name.endswith("-poll") or c.family == "backport-queue"


def steps(ctx, names):
    active = cts.split_available(names)[0]
    return (len(active) * (ctx.repeat + 1)
            + sum(c.name in WAKE for c in active) + 1
            + any(c.name == "channel" for c in active))


def _py_floor(s, n, pause):
    """n one-way wake-ups through a bare semaphore, from this thread to
    the far side of session s (an isolated interpreter): its loop and
    this one are the Channel's, with the semaphore for the channel."""
    from . import _probes
    slot = _probes._sem_new()
    s.command(("semwake", slot, n))
    post, clock, sleep = _probes._sem_post, time.perf_counter_ns, time.sleep
    for _ in range(n):
        sleep(pause)
        post(slot, clock())
    out = list(s.reply())
    # Freed only once the far side is done with it (after a failure the
    # slot stays in use: the far side may still wait on it).
    _probes._sem_free(slot)
    return out


def _wake_phase(ctx, sessions):
    """One-way wake-ups of a parked far side, with the machine's floor
    (a bare semaphore between two threads) measured in the same run."""
    n = ctx.wake_n
    out = {}
    from . import _probes
    ctx.progress.step("latency: wake-up floor")
    out["floor"] = common.summary(sorted(_probes._wake_floor(n, WAKE_PAUSE)))
    if "channel" in sessions:
        ctx.progress.step("latency: Python-level wake-up floor")
        out["pyfloor"] = common.summary(sorted(
            _py_floor(sessions["channel"], n, WAKE_PAUSE)))
    for name in WAKE:
        s = sessions.get(name)
        if s is None:
            continue
        ctx.progress.step(f"latency: {name} parked wake-up")
        out[name] = common.summary(sorted(s.wake(n, WAKE_PAUSE)))
    return out


def run(ctx, names):
    active, skipped = cts.split_available(names)
    repeat = ctx.repeat
    samples = {c.name: [] for c in active}
    rounds = {c.name: [] for c in active}
    round_p99 = {c.name: [] for c in active}
    gauges = {c.name: [] for c in active}
    errors = {}
    sessions = {}
    try:
        for c in active:
            ctx.progress.step(f"latency: starting {c.name}")
            try:
                s = sessions[c.name] = cts.Session(c, 16, ctx.runner)
                s.pingpong(3 if _polls(c) else ctx.latency_warmup, PINGS)
            except Exception as exc:  # noqa: BLE001 - reported
                errors[c.name] = str(exc)
                bad = sessions.pop(c.name, None)
                if bad is not None:
                    bad.close()
        ready = [c for c in active if c.name in sessions]
        wake = {}
        for r in range(repeat):
            order = ready if r % 2 == 0 else ready[::-1]
            for c in order:
                ctx.progress.step(f"latency {c.name} round {r + 1}")
                n = ctx.poll_n if _polls(c) else ctx.latency_n
                n = max(1, n // repeat)
                before = common.quick_gauge()
                got = sessions[c.name].pingpong(n, PINGS)
                gauges[c.name].append([before, common.quick_gauge()])
                samples[c.name] += got
                rounds[c.name].append(common.median(got))
                round_p99[c.name].append(
                    common.percentile(sorted(got), 99))
        wake = _wake_phase(ctx, sessions)
    finally:
        for s in sessions.values():
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
    stats = {}
    for name, xs in samples.items():
        if not xs:
            continue
        xs.sort()
        stats[name] = {
            "n": len(xs),
            "min_ns": xs[0],
            "median_ns": common.percentile(xs, 50),
            "p90_ns": common.percentile(xs, 90),
            "p99_ns": common.percentile(xs, 99),
            "p999_ns": common.percentile(xs, 99.9),
            "max_ns": xs[-1],
            "mean_ns": sum(xs) / len(xs),
            "round_medians_ns": rounds[name],
            "round_p99_ns": round_p99[name],
            "round_gauge_ns": gauges[name],
            "quantiles_ns": [common.percentile(xs, 100 * i / QUANTILES)
                             for i in range(QUANTILES + 1)],
        }
    return {
        "method": __doc__.strip(),
        "contenders": [c.name for c in active if c.name in stats],
        "skipped": skipped,
        "errors": errors,
        "round_trips": {c.name: stats[c.name]["n"] for c in active
                        if c.name in stats},
        "stats": stats,
        "wake_pause_s": WAKE_PAUSE,
        "wake": wake,
    }


REFS = ("channel", "memchannel")
WAKE_LABELS = {
    "floor": "bare semaphore, two threads (machine floor)",
    "pyfloor": "bare semaphore, Python, two interpreters",
}


def report(res):
    labels = {c.name: c.label for c in cts.ALL}
    st = res["stats"]
    names = [n for n in res["contenders"] if n in st]
    lines = ["\nPing-pong round trip (8-byte bytes each way), main "
             "interpreter <-> far side"]
    rows = []
    for name in names:
        x = st[name]
        rows.append([labels.get(name, name), str(x["n"])]
                    + [common.fmt_ns(x[k]) for k in
                       ("min_ns", "median_ns", "p90_ns", "p99_ns",
                        "p999_ns")])
    lines.append(common.table(["contender", "n", "min", "median", "p90",
                               "p99", "p99.9"], rows))
    refs = [r for r in REFS if r in st]
    if refs:
        lines.append("\nEach contender's round trip / tpshare's (above 1: "
                     "tpshare is faster)")
        headers = ["contender"]
        for r in refs:
            headers += [f"median / {labels[r]}'s", f"p99 / {labels[r]}'s"]
        rows = []
        for name in names:
            row = [labels.get(name, name)]
            for r in refs:
                row += [common.fmt_ratio(st[name][k] / st[r][k])
                        for k in ("median_ns", "p99_ns")]
            rows.append(row)
        lines.append(common.table(headers, rows))
    spread = []
    for n in names:
        meds = st[n].get("round_medians_ns", [])
        p99s = st[n].get("round_p99_ns", [None] * len(meds))
        modes = [common.mode_of(g) or ("mixed" if g else "?")
                 for g in st[n].get("round_gauge_ns", [None] * len(meds))]
        if meds:
            spread.append([labels.get(n, n)] + [
                f"{common.fmt_ns(m)} / {common.fmt_ns(p) if p else '?'} "
                f"{mode}" for m, p, mode in zip(meds, p99s, modes)])
    if spread:
        rounds = max(len(r) for r in spread) - 1
        spread = [r + [""] * (rounds + 1 - len(r)) for r in spread]
        lines.append("\n" + common.wrap(
            "Median / p99 of each round, with the machine's mode from the "
            "core-to-core gauge before and after it (a wide spread of "
            "medians is a waiter flipping between spinning and parking)"))
        lines.append(common.table(
            ["contender"] + [f"round {i + 1}" for i in range(rounds)],
            spread))
    wake = res.get("wake") or {}
    if wake:
        lines.append("\n" + common.wrap(
            f"Parked wake-up: one-way, send to the far side running with "
            f"the item, after it waited "
            f"{common.fmt_ns(res['wake_pause_s'] * 1e9)} (parked)"))
        rows = []
        floors = [wake.get("floor"), wake.get("pyfloor")]
        for name, x in wake.items():
            label = WAKE_LABELS.get(name) or labels.get(name, name)
            row = [label, str(x["n"])]
            row += [common.fmt_ns(x[k]) for k in
                    ("min_ns", "median_ns", "p90_ns", "p99_ns")]
            row += [common.fmt_ratio(x["median_ns"] / f["median_ns"])
                    if f else "" for f in floors]
            rows.append(row)
        lines.append(common.table(["contender", "n", "min", "median", "p90",
                                   "p99", "/ floor", "/ Python floor"],
                                  rows))
        if floors[1]:
            lines.append(common.wrap(
                "Medians over the machine floor's and over the Python-level "
                "floor's.  The Python-level floor: the Channel's two loops "
                "with a bare semaphore for the channel (both GILs, the "
                "calls, the clock in Python); what the Channel adds is its "
                "row over this one."))
    lines += common.problems(res)
    return "\n".join(lines)
