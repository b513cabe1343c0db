"""Memory per queued message: a fresh child process queues n copies of
one payload on a transport that nobody reads, and the growth of its
resident set size (VmRSS in /proc/self/status, which sees raw malloc
memory that tracemalloc cannot) is divided by n.

The payload object is the same each time, so what is counted is what the
transport itself keeps per message: its queue slot and record, the copy
it makes (tpshare copies small values into the record; CPython's pickle
mode keeps a pickled bytes object; ``queue.Queue`` keeps a reference),
and the export a zero-copy transport holds.  One item is queued before
the first reading, so imports and first-use set-up are not counted.
Pipes are not in this table: a pipe holds at most its kernel buffer
(64 KiB on Linux) and then blocks the sender.

Second table, memory kept after delivery: a fresh child sends n distinct
64 KiB str objects one at a time, receives each (in the same
interpreter) and drops both; the RSS growth divided by n is what the
transport keeps alive after the program let go (the Channel's identity
across messages holds the last 1024 objects sent and up to 4096
received).
"""

import json
import os
import subprocess
import sys

from . import common, contenders as cts

CONTENDERS = ("channel", "channel-id", "memchannel", "tpshare-queue",
              "cpython-queue", "cpython-queue-mv", "cpython-queue-pickle",
              "cpython-channel", "threads")
RETAINED = ("channel", "channel-id", "tpshare-queue", "cpython-queue",
            "cpython-channel", "threads")
RETAINED_SIZE = 64 << 10


def payloads(quick):
    if quick:
        return [("int", 8), ("bytes", 64), ("bytes", 64 << 10)]
    return [("int", 8), ("str", 64), ("bytes", 64), ("bytes", 4 << 10),
            ("bytes", 64 << 10), ("bytes", 1 << 20)]


def count(size, quick):
    """Messages queued: 100,000 (20,000 quick), fewer for large payloads
    so that a copying transport stays under 512 MiB (64 MiB quick)."""
    n = 20_000 if quick else 100_000
    budget = (64 << 20) if quick else (512 << 20)
    return max(64, min(n, budget // max(size, 1)))


def _payload(kind, size):
    if kind == "bytes":
        return b"x" * size
    if kind == "str":
        return "x" * size
    return 2 ** 40 + 12345


def _putter(name, data):
    """A function queueing data once more on the contender, in this
    interpreter, and the objects to keep alive."""
    import pickle

    if name in ("channel", "channel-id", "memchannel"):
        import tpshare
        ch = (tpshare.MemChannel() if name == "memchannel"
              else tpshare.Channel(identity=name == "channel-id"))
        send = ch.send
        return (lambda: send(data)), ch
    if name == "tpshare-queue":
        import tpshare
        q = tpshare.Queue()
        return (lambda: q.put(data)), q
    if name.startswith("cpython-queue"):
        import _interpqueues as iq
        mode = name[len("cpython-queue"):]
        fmt = 1 if mode == "-pickle" else 0
        qid = iq.create(0, fmt, 3)
        put = iq.put
        if mode == "-pickle":
            dumps = pickle.dumps
            return (lambda: put(qid, dumps(data), fmt, 3)), qid
        wire = memoryview(data) if mode == "-mv" else data
        return (lambda: put(qid, wire, fmt, 3)), qid
    if name == "cpython-channel":
        if sys.version_info >= (3, 13):
            import _interpchannels as c
            cid = c.create(3)
            send = c.send
            return (lambda: send(cid, data, 3, blocking=False)), cid
        import _xxinterpchannels as c
        cid = c.create()
        send = c.send
        return (lambda: send(cid, data)), cid
    if name == "threads":
        import queue
        q = queue.Queue()
        return (lambda: q.put(data)), q
    raise ValueError(name)


def child(name, kind, size, n):
    """In the child process: queue n messages, print the JSON result."""
    import gc

    data = _payload(kind, size)
    put, keep = _putter(name, data)
    put()
    gc.collect()
    before = common.rss_bytes()
    for _ in range(n):
        put()
    gc.collect()
    after = common.rss_bytes()
    print(json.dumps({"n": n, "rss_before": before, "rss_after": after,
                      "bytes_per_message": (after - before) / n}))
    os._exit(0)     # skip teardown of n queued items


def _todo(ctx, active):
    return [(c, kind, size) for kind, size in payloads(ctx.quick)
            for c in active if kind in c.kinds]


def _retained_names(names):
    return [n for n in RETAINED if n in names]


def steps(ctx, names):
    return (len(_todo(ctx, cts.split_available(names)[0]))
            + len(cts.split_available(_retained_names(names))[0]))


def _pair(name):
    """(send, recv, keep) for a transport used within one interpreter."""
    if name in ("channel", "channel-id"):
        import tpshare
        ch = tpshare.Channel(identity=name == "channel-id")
        return ch.send, ch.recv, ch
    if name == "tpshare-queue":
        import tpshare
        q = tpshare.Queue()
        return q.put, q.get, q
    if name == "cpython-queue":
        import _interpqueues as iq
        qid = iq.create(0, 0, 3)
        return (lambda o: iq.put(qid, o, 0, 3)), (lambda: iq.get(qid)[0]), qid
    if name == "cpython-channel":
        if sys.version_info >= (3, 13):
            import _interpchannels as c
            cid = c.create(3)
            return ((lambda o: c.send(cid, o, 3, blocking=False)),
                    (lambda: c.recv(cid)[0]), cid)
        import _xxinterpchannels as c
        cid = c.create()
        return (lambda o: c.send(cid, o)), (lambda: c.recv(cid)), cid
    if name == "threads":
        import queue
        q = queue.Queue()
        return q.put, q.get, q
    raise ValueError(name)


def child_retained(name, size, n):
    """In the child process: send, receive and drop n distinct str of size
    characters; print the JSON result."""
    import gc

    send, recv, keep = _pair(name)
    send("warm-up" * 10)
    recv()
    gc.collect()
    before = common.rss_bytes()
    for i in range(n):
        s = ("%08d" % i + "x" * size)[:size]
        send(s)
        del s
        x = recv()
        del x
    gc.collect()
    after = common.rss_bytes()
    print(json.dumps({"n": n, "size": size, "rss_before": before,
                      "rss_after": after,
                      "bytes_per_message": (after - before) / n}))
    os._exit(0)


def _child_json(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines()
                            or ["exit %d" % proc.returncode])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx, names):
    active, skipped = cts.split_available(names)
    if common.rss_bytes() is None:
        return {"method": __doc__.strip(), "skipped": {
            c.name: "no /proc/self/status on this system" for c in active},
            "errors": {}, "points": {}, "contenders": []}
    pls = payloads(ctx.quick)
    todo = _todo(ctx, active)
    points, errors = {}, {}
    for c, kind, size in todo:
        key = f"{kind}/{size}"
        n = count(size, ctx.quick)
        ctx.progress.step(f"memory {c.name} {kind} {common.fmt_size(size)}")
        code = ("from tpshare.bench import memory; "
                f"memory.child({c.name!r}, {kind!r}, {size}, {n})")
        try:
            rec = _child_json(code)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            errors[f"{c.name} {key}"] = str(exc)
            continue
        points.setdefault(key, {})[c.name] = rec
    retained = {}
    n_ret = 256 if ctx.quick else 2048
    for c in cts.split_available(_retained_names(names))[0]:
        ctx.progress.step(f"memory kept after delivery: {c.name}")
        code = ("from tpshare.bench import memory; memory.child_retained("
                f"{c.name!r}, {RETAINED_SIZE}, {n_ret})")
        try:
            retained[c.name] = _child_json(code)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            errors[f"{c.name} retained"] = str(exc)
    return {
        "retained": retained,
        "method": __doc__.strip(),
        "contenders": [c.name for c in active],
        "payloads": [f"{k}/{s}" for k, s in pls],
        "skipped": skipped,
        "errors": errors,
        "points": points,
    }


def _payload_label(key):
    kind, size = key.split("/")
    return "one int" if kind == "int" else \
        f"{kind} {common.fmt_size(int(size))}"


def report(res):
    """A row per contender, a column per payload."""
    labels = {c.name: c.label for c in cts.ALL}
    lines = ["\nMemory per queued message (RSS growth / messages queued, "
             "bytes)"]
    names = res["contenders"]
    keys = [k for k in res.get("payloads", []) if res["points"].get(k)]
    heads = [_payload_label(k) for k in keys]
    rows = []
    for n in names:
        if not any(n in res["points"][k] for k in keys):
            continue
        rows.append([labels.get(n, n)] + [
            f"{res['points'][k][n]['bytes_per_message']:,.0f}"
            if n in res["points"][k] else "n/a" for k in keys])
    if rows:
        lines.append(common.table(["contender"] + heads, rows))
    for ref in ("channel", "memchannel"):
        if ref not in names:
            continue
        ks = [k for k in keys if ref in res["points"][k]]
        others = [n for n in names if n != ref
                  and any(n in res["points"][k] for k in ks)]
        if not ks or not others:
            continue
        rrows = []
        for n in others:
            row = [labels.get(n, n)]
            for k in ks:
                mine = res["points"][k][ref]["bytes_per_message"]
                rec = res["points"][k].get(n)
                row.append(common.fmt_ratio(rec["bytes_per_message"] / mine)
                           if rec is not None and mine > 0 else "n/a")
            rrows.append(row)
        lines.append(f"\nEach contender's memory / {labels[ref]}'s (above "
                     f"1: {labels[ref]} uses less)")
        lines.append(common.table(
            ["contender"] + [_payload_label(k) for k in ks], rrows))
    ret = res.get("retained") or {}
    if ret:
        any_rec = next(iter(ret.values()))
        lines.append(f"\nMemory kept after delivery: {any_rec['n']} "
                     f"distinct str of {common.fmt_size(any_rec['size'])} "
                     "sent, received and dropped (RSS growth / messages)")
        lines.append(common.table(
            ["contender", "bytes kept per message", "MiB kept in all"],
            [[labels[n], f"{r['bytes_per_message']:.0f}",
              f"{(r['rss_after'] - r['rss_before']) / (1 << 20):.1f}"]
             for n, r in ret.items()]))
    lines += common.problems(res)
    return "\n".join(lines)
