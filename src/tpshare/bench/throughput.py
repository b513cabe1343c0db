"""Throughput against payload size: one sender (the main thread of the
main interpreter), one receiver (an isolated interpreter, a thread or a
child process), the same payload sent n times.

Each message is one of up to 2048 distinct payload objects, sent in
turn, so that no transport is timed handing back an object it cached.
A trial times the main thread from its first send until the receiver has
received the n-th item and consumed it (released a view, or dropped the
object), stamped by the receiver with ``time.perf_counter()`` (the same
monotonic clock in every interpreter and process).  Receivers get a
usable object: bytes, str or int where the transport rebuilds objects, a
memoryview where it shares memory, so a zero-copy transport's figure
does not include reading the memory.  n is calibrated per contender so a
trial lasts about the target time; contenders are timed in alternating
order within each round, and the median over rounds is reported.

Queues hold at most 1000 items.  Where each queued item holds a copy of
the payload (CPython's pickle mode; bytes and str below the share
threshold, through tpshare's Channel and Queue) the bound is lowered so
that at most 256 MiB of copies are queued (at least 2 items); transports
that queue references or exports keep 1000 at every size.  Pipes buffer
what the kernel does; shared memory has up to 8 slots (512 MiB at most).
"""

import gc

from . import common, contenders as cts

ONE_INT = 2 ** 40 + 12345          # not a cached small int; fits 64 bits
INT_BITS = ONE_INT.bit_length()


def copies_at_send(contender, kind, size):
    """Whether each queued item holds its own copy of the payload."""
    if contender.family == "cpython-queue":
        return contender.options[0] == "pickle"
    if contender.family == "backport-queue":
        return True                 # create(maxsize) pickles every item
    if contender.family in ("channel", "tpshare-queue"):
        if kind in ("bytes", "str"):
            # The payloads' str are ASCII: size characters, size bytes.
            from tpshare import _tpshare
            threshold = getattr(_tpshare, "_bytes_threshold", None)
            return threshold is None or size < threshold()
    return False


def capacity(contender, kind, size):
    """Queue bound for a contender at a payload (see the module doc)."""
    if not copies_at_send(contender, kind, size):
        return 1000
    return max(2, min(1000, (256 << 20) // max(size, 1)))


POOL = 2048      # distinct payloads, more than the identity ring (1024)


def payloads(kind, size, budget=128 << 20):
    """Distinct payload objects, sent in turn: 2048 of them up to 64 KiB
    (so no transport can hand back an object it cached for an earlier
    message: the Channel's identity ring holds 1024), fewer above
    (at most `budget` bytes in all; bytes that large are shared, not
    cached)."""
    k = POOL if size <= (64 << 10) else max(1, min(POOL, budget // size))
    if kind == "bytes":
        if k == 1:
            return [b"x" * size]
        return [(b"%08d" % i + b"x" * size)[:size] for i in range(k)]
    if kind == "str":
        return [("%08d" % i + "x" * size)[:size] for i in range(k)]
    return [ONE_INT + i for i in range(k)]


def expected(contender, kind, size):
    """What the receiver must see: (type name, size or bits)."""
    if kind == "int":
        return ("int", INT_BITS)
    if contender.family == "memchannel" and contender.options:
        return (kind, size)     # pickled and unpickled
    if contender.family == "channel" and contender.options == ("view",):
        return ("memoryview", size)
    if contender.family in ("memchannel", "mp-shm") or (
            contender.family == "cpython-queue" and
            contender.options[0] == "mv"):
        return ("memoryview", size)
    return (kind, size)


def points(sizes, str_sizes):
    """(kind, size) in running order: ints first, then each size with its
    kinds (sessions are remade when the queue capacity changes)."""
    out = [("int", 8)]
    for size in sizes:
        out.append(("bytes", size))
        if size in str_sizes:
            out.append(("str", size))
    return out


def _plan(ctx, names):
    active, skipped = cts.split_available(names)
    str_sizes = [s for s in ctx.sizes if s <= ctx.str_max]
    return active, skipped, str_sizes, points(ctx.sizes, str_sizes)


def steps(ctx, names):
    """Progress steps run() will take."""
    active, _, _, pts = _plan(ctx, names)
    return sum(ctx.repeat + 1 for kind, size in pts for c in active
               if kind in c.kinds
               and (c.max_size is None or size <= c.max_size)) \
        + sweep_steps(ctx, [c.name for c in active])


def run(ctx, names):
    """Run the experiment for the contenders named (those that can
    carry each kind); returns the result dict for the JSON."""
    active, skipped, str_sizes, pts = _plan(ctx, names)
    sizes = ctx.sizes
    repeat = ctx.repeat

    results = {}                    # "kind/size" -> contender -> record
    errors = {}
    sessions = {}                   # contender name -> Session
    try:
        for kind, size in pts:
            key = f"{kind}/{size}"
            row = results.setdefault(key, {})
            data = payloads(kind, size)
            ready = []
            for c in active:
                if kind not in c.kinds or c.name in errors \
                        or (c.max_size is not None and size > c.max_size):
                    continue
                ctx.progress.note(f"throughput {c.name} {kind} "
                                  f"{common.fmt_size(size)}")
                try:
                    cap = capacity(c, kind, size)
                    s = sessions.get(c.name)
                    if s is not None and s.capacity != cap:
                        sessions.pop(c.name).close()
                        s = None
                    if s is None:
                        s = sessions[c.name] = cts.Session(
                            c, cap, ctx.runner)
                    s.prepare(size)
                    got = s.probe(data[0])
                    want = expected(c, kind, size)
                    if got != want:
                        raise RuntimeError(f"received {got}, expected {want}")
                    n = calibrate(ctx, s, data, size, ctx.trial_seconds)
                    row[c.name] = {"n": n, "received_as": got[0],
                                   "capacity": cap, "seconds": [],
                                   "gauge_ns": []}
                    ready.append((c, s))
                except Exception as exc:  # noqa: BLE001 - reported
                    errors[c.name] = f"{kind} {size}: {exc}"
                    ctx.progress.step(n=repeat + 1)
                    bad = sessions.pop(c.name, None)
                    if bad is not None:
                        _close_quietly(bad)
                    continue
                ctx.progress.step()
            for r in range(repeat):
                order = ready if r % 2 == 0 else ready[::-1]
                for c, s in order:
                    rec = row[c.name]
                    gc.collect()
                    before = common.quick_gauge()
                    rec["seconds"].append(trial_without_gc(s, data,
                                                           rec["n"]))
                    rec["gauge_ns"].append([before, common.quick_gauge()])
                    ctx.progress.step()
            for c, _ in ready:
                rec = row[c.name]
                rates = [rec["n"] / t for t in rec["seconds"]]
                rec["msgs_per_s"] = rates
                rec["median_msgs_per_s"] = common.median(rates)
                # bytes/s only where bytes are copied: a view or a
                # reference moves none, whatever the payload's size.
                rec["zero_copy"] = c.zero_copy
                rec["median_bytes_per_s"] = (
                    None if kind == "int" or c.zero_copy
                    else rec["median_msgs_per_s"] * size)
            del data
    finally:
        for s in sessions.values():
            _close_quietly(s)
    swept = None
    if SWEEP not in errors:
        try:
            swept = sweep(ctx, [c.name for c in active])
        except Exception as exc:  # noqa: BLE001 - reported
            errors[SWEEP + " sweep"] = str(exc)
    return {
        "method": __doc__.strip(),
        "contenders": [c.name for c in active],
        "skipped": skipped,
        "errors": errors,
        "sizes": sizes,
        "str_sizes": str_sizes,
        "int_value": ONE_INT,
        "repeat": repeat,
        "trial_seconds": ctx.trial_seconds,
        "points": results,
        "sweep": swept,
    }


# ---------------------------------------------------------------------------
# The machine's two modes.

def by_mode(rec):
    """(near, far): the rates of the trials whose gauges before and after
    were both near, and of those both far (common.mode_of; trials that
    straddle a switch are in neither)."""
    near, far = [], []
    for t, g in zip(rec["seconds"], rec.get("gauge_ns", [])):
        mode = common.mode_of(g)
        if mode == "near":
            near.append(rec["n"] / t)
        elif mode == "far":
            far.append(rec["n"] / t)
    return near, far


MODE_ROWS = ("channel", "channel-batch", "memchannel", "cpython-queue",
             "cpython-queue-mv")


def mode_report(res):
    """Our designs and CPython's queue per mode, for each point where
    some trial of theirs fell in one mode."""
    labels = {c.name: c.label for c in cts.ALL}
    rows = []
    for key, row in res["points"].items():
        kind, size = key.split("/")
        what = "one int" if kind == "int" else \
            f"{kind} {common.fmt_size(int(size))}"
        for name in MODE_ROWS:
            rec = row.get(name)
            if rec is None or "seconds" not in rec:
                continue
            near, far = by_mode(rec)
            if not near and not far:
                continue
            cell = [(f"{common.fmt_rate(common.median(x))} ({len(x)})"
                     if x else "-") for x in (near, far)]
            rows.append([what, labels[name]] + cell)
    if not rows:
        return ""
    return "\n".join([
        "\n" + common.wrap(
            f"Throughput by the machine's mode (messages/s, median of the "
            f"trials with the core-to-core gauge below {common.FAR_NS} ns "
            f"before and after (near) or above it both times (far); trials "
            f"counted in brackets)"),
        common.table(["payload", "contender", "near", "far"], rows)])


# ---------------------------------------------------------------------------
# The size sweep.

SWEEP = "memchannel"
SWEEP_BUDGET = 32 << 20      # payload bytes held per size


def sweep(ctx, names):
    """MemChannel's rate at every size, the sizes interleaved: each round
    times every size once (in alternating order) with trials half as
    long as the main table's, in 2 x repeat + 1 rounds.  Flatness is read
    from each size's rate relative to the median of all sizes in the same
    round (the median of those ratios over rounds), as contenders are
    compared by per-round ratios: on a virtual machine the host moves the
    vCPUs, the core-to-core gauge (measured before each round) switches
    between modes several times a minute, and every cross-interpreter
    rate moves with it, for all sizes alike.  Sizes timed minutes apart,
    as in the main table, compare the machine's modes as much as the
    sizes.  None when MemChannel is not run."""
    if SWEEP not in names or cts.BY_NAME[SWEEP].unavailable():
        return None
    c = cts.BY_NAME[SWEEP]
    sizes = ctx.sizes
    rounds = sweep_rounds(ctx)
    s = cts.Session(c, capacity(c, "bytes", sizes[0]), ctx.runner)
    try:
        data, n = {}, {}
        for size in sizes:
            ctx.progress.note(f"throughput sweep {c.name} "
                              f"{common.fmt_size(size)}")
            data[size] = payloads("bytes", size, SWEEP_BUDGET)
            got = s.probe(data[size][0])
            if got != expected(c, "bytes", size):
                raise RuntimeError(f"received {got} at {size}")
            n[size] = calibrate(ctx, s, data[size], size,
                                ctx.trial_seconds / 2)
            ctx.progress.step()
        rates = {size: [] for size in sizes}
        gauges = []
        for r in range(rounds):
            gauges.append(common.line_round_trip_ns())
            for size in (sizes if r % 2 == 0 else sizes[::-1]):
                gc.collect()
                t = trial_without_gc(s, data[size], n[size])
                rates[size].append(n[size] / t)
            ctx.progress.step(n=len(sizes))
    finally:
        _close_quietly(s)
    mids = [common.median([rates[size][r] for size in sizes])
            for r in range(rounds)]
    rel = {size: common.median([rates[size][r] / mids[r]
                                for r in range(rounds)]) for size in sizes}
    return {
        "method": sweep.__doc__.strip(),
        "contender": c.name,
        "sizes": sizes,
        "rounds": rounds,
        "n": {str(k): v for k, v in n.items()},
        "msgs_per_s": {str(k): v for k, v in rates.items()},
        "median_msgs_per_s": {str(k): common.median(v)
                              for k, v in rates.items()},
        "relative": {str(k): v for k, v in rel.items()},
        "worst_deviation": max(abs(v - 1) for v in rel.values()),
        "line_round_trip_ns": gauges,
    }


def sweep_rounds(ctx):
    return 2 * ctx.repeat + 1


def sweep_steps(ctx, names):
    """One step per size to calibrate, one per size and round."""
    if SWEEP not in names:
        return 0
    return len(ctx.sizes) * (sweep_rounds(ctx) + 1)


def sweep_report(sw):
    labels = {c.name: c.label for c in cts.ALL}
    rows = []
    for size in sw["sizes"]:
        rs = sw["msgs_per_s"][str(size)]
        rows.append([common.fmt_size(size),
                     f"{sw['relative'][str(size)] - 1:+.0%}",
                     common.fmt_rate(sw["median_msgs_per_s"][str(size)]),
                     f"{common.fmt_rate(min(rs))} - "
                     f"{common.fmt_rate(max(rs))}"])
    g = [x for x in sw["line_round_trip_ns"] if x is not None]
    text = [
        "\n" + common.wrap(
            f"{labels[sw['contender']]} across sizes: every size in each of "
            f"{sw['rounds']} rounds; flatness = each size's rate / the "
            f"median of all sizes in the same round (median over rounds): "
            f"worst size {sw['worst_deviation']:.0%} off")]
    if g:
        text.append(common.wrap("core-to-core gauge before each round: "
                                + ", ".join(f"{x:.0f}" for x in g) + " ns"))
    text.append(common.table(["size", "vs sizes' median", "median rate",
                              "rounds (min - max)"], rows))
    return "\n".join(text)


def calibrate(ctx, s, data, size, seconds):
    """Warm-up trials of session s, which also calibrate: the number of
    items for a trial of about `seconds`, within ctx's bounds.  The first
    trial moves up to 8 MiB of payload (200 items at most); while a trial
    takes under an eighth of `seconds`, the next moves four times as many
    items, so that the estimate never rests on a trial as short as one
    wake-up (a single 64 MiB buffer through a zero-copy transport:
    timed alone, its start-up made trials of a few hundred items, whose
    fixed cost then showed as a slower rate at that size)."""
    n = max(1, min(200, (8 << 20) // size))
    while True:
        t = s.trial(data, n)
        if t >= seconds / 8 or n >= ctx.max_n:
            break
        n = min(ctx.max_n, n * 4)
    per = max(t / n, 1e-9)
    return max(ctx.min_n, min(ctx.max_n, int(seconds / per)))


def trial_without_gc(s, data, n):
    """Session s's trial of n items with the cyclic collector off (the
    caller collects first); seconds."""
    gc.disable()
    try:
        return s.trial(data, n)
    finally:
        gc.enable()


def _close_quietly(session):
    try:
        session.close()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------
# Report.

REFS = ("memchannel", "channel")
MAIN_RATIO_LABEL = "Channel / CPython queue"


def ratios(res):
    """For each point, each of our designs against each other contender:
    the median of per-round throughput ratios (> 1: ours faster)."""
    out = {}
    for key, row in res["points"].items():
        for ref in REFS:
            if ref not in row or "msgs_per_s" not in row[ref]:
                continue
            for name, rec in row.items():
                if name == ref or "msgs_per_s" not in rec:
                    continue
                out.setdefault(key, {}).setdefault(ref, {})[name] = \
                    common.paired_ratio(row[ref]["msgs_per_s"],
                                        rec["msgs_per_s"])
    return out


def _copies(name, rec):
    """Whether a record's transport copies the payload (bytes/s mean
    something); results written before the flag existed fall back on
    the contender's definition."""
    if "zero_copy" in rec:
        return not rec["zero_copy"]
    c = cts.BY_NAME.get(name)
    return c is not None and not c.zero_copy


def report(res):
    """The terminal tables: per payload kind, a row per contender and a
    column per size (split to fit the terminal)."""
    lines = []
    labels = {c.name: c.label for c in cts.ALL}
    rat = ratios(res)
    for kind in ("bytes", "str", "int"):
        keys = [k for k in res["points"] if k.startswith(kind + "/")]
        names = [n for n in res["contenders"]
                 if any(n in res["points"][k] for k in keys)]
        if not keys or not names:
            continue
        heads = ["one int" if kind == "int"
                 else common.fmt_size(int(k.split("/")[1])) for k in keys]

        def cell(name, key, value):
            rec = res["points"][key].get(name)
            if rec is None or "median_msgs_per_s" not in rec:
                return "n/a"
            return value(rec)

        rounds = res["repeat"]
        lines.append(f"\nThroughput, {kind} payloads: messages/s, median of "
                     f"{rounds} round{'s' if rounds != 1 else ''}")
        rows = [[labels.get(n, n)] + [
            cell(n, k, lambda r: common.fmt_rate(r["median_msgs_per_s"]))
            for k in keys] for n in names]
        # The Channel against CPython's queue at each size, in the table
        # itself (the paired ratio, as in the ratio tables below).
        if "channel" in names and "cpython-queue" in names:
            rows.append([MAIN_RATIO_LABEL] + [
                common.fmt_ratio(rat.get(k, {}).get("channel", {})
                                 .get("cpython-queue"))
                for k in keys])
        lines.append(common.table(["contender"] + heads, rows))
        copying = [n for n in names if kind != "int" and any(
            _copies(n, res["points"][k][n]) for k in keys
            if n in res["points"][k])]
        zero = [labels.get(n, n) for n in names if n not in copying]
        if copying:
            lines.append("\n" + common.wrap(
                f"Bytes copied per second, {kind} payloads (transports "
                "that copy the payload" + (
                    "; not for " + ", ".join(zero) + ", which move a view "
                    "or a reference whatever the size" if zero else "")
                + ")"))
            lines.append(common.table(
                ["contender"] + heads,
                [[labels.get(n, n)] + [
                    cell(n, k, lambda r: common.fmt_bytes_rate(
                        r["median_msgs_per_s"] * int(k.split("/")[1])))
                    for k in keys] for n in copying]))
        for ref in REFS:
            if ref not in names:
                continue
            others = [n for n in names if n != ref]
            if not others or not any(rat.get(k, {}).get(ref) for k in keys):
                continue
            lines.append(f"\n{labels[ref]} throughput / each other "
                         f"contender's ({kind}; above 1: {labels[ref]} "
                         "faster)")
            lines.append(common.table(
                ["contender"] + heads,
                [[labels.get(n, n)] + [
                    common.fmt_ratio(rat.get(k, {}).get(ref, {}).get(n))
                    for k in keys] for n in others]))
    modes = mode_report(res)
    if modes:
        lines.append(modes)
    if res.get("sweep"):
        lines.append(sweep_report(res["sweep"]))
    lines += common.problems(res)
    return "\n".join(lines)

