"""Between processes: tpshare.shm against multiprocessing and faster-fifo.

The main process sends; a child process (multiprocessing, spawn) takes
every item and tells the main process when it has them all, through a
multiprocessing Pipe.  A rate is items over the time from the first send
to that word.  Three parts:

- small messages (64-byte bytes), one at a time and in batches of 64:
  tpshare.shm.MemChannel (send / send_many, the receiver takes views with
  recv_many), tpshare.shm.Channel in batches (send_many / recv_many:
  bytes objects out, as the baselines give), multiprocessing.Queue (put,
  or put of a list of 64), and faster-fifo's Queue (put / put_many,
  get_many) when it is installed.  Every contender sends distinct bytes
  objects (a pool of 2048, cycled), one per item of a batch too: a list
  of 64 references to one object would be pickled once;
- buffers of 4 KiB and up: a segment buffer handed over (ch.buffer(n),
  send, the receiver's view released: the hand-off alone, nobody writes
  or reads the payload, so the cost does not grow with the size; the
  channel holds HANDOFF_DEPTH items in flight at every size, in a heap
  of exactly that many buffers, which a memfd backs only where written;
  every size has its channel and child from the start, and the sizes
  take turns, in a different order each round, so that the machine's
  noise falls on every size alike: the best and the median of the
  rounds are reported), the same size copied into the segment (send of
  a bytes object), multiprocessing.Queue and faster-fifo (pickled
  through a pipe or their ring), and the hand-off a program writes by
  hand with multiprocessing.shared_memory (a segment made per message,
  its name sent through a Pipe, the receiver attaches and unlinks it);
- ping-pong: 64 bytes there and back, MemChannel pair against
  multiprocessing.Pipe; median and p99 of the round trip;
- what crossing a process costs: one producer/consumer pipeline (the
  consumer is tpshare.bench._remote.pipeline_consumer: it copies each
  item out and releases it) run between two interpreters of this
  process with tpshare.MemChannel (the consumer in a tpshare.Interpreter)
  and between two processes with tpshare.shm.MemChannel (the consumer in
  a spawned process): the same code, two channel classes.
"""

import itertools
import multiprocessing as mp
import sys
import time

from . import common

SMALL = 64
BATCH = 64
PINGPONG = 64
# Segment buffers in flight (the channel's maxsize) in the hand-off,
# the same at every size.
HANDOFF_DEPTH = 64
# Rounds of the hand-off (every size once per round).
HANDOFF_ROUNDS = 9
HANDOFF_ROUNDS_QUICK = 5
SHM_KINDS = ("shm", "shm-batch", "shm-chan-batch", "shm-buffer", "shm-copy")
SMALL_NAMES = ("shm", "shm-batch", "shm-chan-batch", "mp-queue",
               "mp-queue-batch", "faster-fifo", "faster-fifo-batch")
BUFFER_NAMES = ("shm-buffer", "shm-copy", "mp-queue", "faster-fifo",
                "shared_memory")
PING_NAMES = ("shm", "mp-pipe")
# The same-code pipeline: where its consumer runs, and the item sizes.
CROSS_NAMES = ("interpreters", "processes")
CROSS_SIZES = (64, 64 << 10, 1 << 20)
LABELS = {
    "shm": "shm.MemChannel",
    "shm-batch": "shm.MemChannel send_many",
    "shm-chan-batch": "shm.Channel send_many",
    "shm-buffer": "shm segment buffer",
    "shm-copy": "shm.MemChannel copy",
    "mp-queue": "multiprocessing.Queue",
    "mp-queue-batch": "multiprocessing.Queue, lists",
    "faster-fifo": "faster-fifo",
    "faster-fifo-batch": "faster-fifo put_many",
    "shared_memory": "shared_memory + Pipe",
    "mp-pipe": "multiprocessing.Pipe",
}


def _faster_fifo():
    """The faster_fifo module, or the reason it cannot be used."""
    try:
        import faster_fifo
    except ImportError as exc:
        return None, (f"faster-fifo is not installed ({exc}; pip install "
                      "faster-fifo, or tpshare[bench])")
    return faster_fifo, None


# ---------------------------------------------------------------------------
# The child's side (a spawned process: imports nothing heavy).


def _attach_unlink(name):
    from multiprocessing import shared_memory
    try:
        seg = shared_memory.SharedMemory(name=name, track=False)
    except TypeError:           # 3.12: no track=; attach registers
        from multiprocessing import resource_tracker
        seg = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(seg._name, "shared_memory")
    seg.close()
    import _posixshmem
    _posixshmem.shm_unlink(seg._name)


def _drain(kind, q, n):
    got = 0
    if kind in SHM_KINDS:
        while got < n:
            items = q.recv_many(256, timeout=60)
            got += len(items)
            del items
    elif kind == "mp-queue":
        for _ in range(n):
            q.get(timeout=60)
    elif kind == "mp-queue-batch":
        while got < n:
            got += len(q.get(timeout=60))
    elif kind in ("faster-fifo", "faster-fifo-batch"):
        while got < n:
            got += len(q.get_many(timeout=60, max_messages_to_get=256))
    elif kind == "shared_memory":
        for _ in range(n):
            _attach_unlink(q.recv())


def _pong(kind, a, b, n):
    if kind == "shm":
        for _ in range(n):
            mv = a.recv(timeout=60)
            b.send(mv)
            mv.release()
    else:
        for _ in range(n):
            b.send_bytes(a.recv_bytes())


def serve(kind, ctl, a, b):
    """The child: run the commands the main process sends on ctl."""
    while True:
        cmd = ctl.recv()
        if cmd is None:
            return
        op, n = cmd
        if op == "drain":
            _drain(kind, a, n)
        else:
            _pong(kind, a, b, n)
        ctl.send("done")


# ---------------------------------------------------------------------------
# The main side.


class _Peer:
    """A child serving one contender, with its transports."""

    def __init__(self, kind, a, b=None):
        ctx = mp.get_context("spawn")
        self.ctl, far = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(kind, far, a, b),
                                daemon=True)
        self.proc.start()
        far.close()

    def start(self, op, n):
        self.ctl.send((op, n))

    def wait(self):
        if not self.ctl.poll(120):
            raise RuntimeError("the child did not finish in 120 s")
        self.ctl.recv()

    def close(self):
        self.ctl.send(None)
        self.proc.join(30)
        if self.proc.exitcode is None:
            self.proc.kill()


def _payloads(size):
    """What the sender cycles through: distinct objects for small
    messages (so a batch is BATCH objects, never BATCH references to
    one), one zeroed object for buffers."""
    if size <= SMALL:
        from . import _remote
        return _remote.distinct_bytes(size)
    return [bytes(size)]


def _batches(pool):
    return [pool[i:i + BATCH] for i in range(0, len(pool), BATCH)]


def _make(kind, size):
    """(transport for the child, the sender's send(n) loop)."""
    from tpshare import shm
    pool = _payloads(size)
    payload = pool[0]
    cycle, islice = itertools.cycle, itertools.islice
    if kind in SHM_KINDS:
        if kind == "shm-buffer":
            # Exactly HANDOFF_DEPTH buffers fit: as many in flight at
            # every size.
            ch = shm.MemChannel(maxsize=HANDOFF_DEPTH,
                                size=HANDOFF_DEPTH * size)
        elif kind == "shm-chan-batch":
            ch = shm.Channel(size=64 << 20)
        else:
            ch = shm.MemChannel(size=max(64 << 20, min(16 * size, 4 << 30)))
        if kind == "shm":
            def loop(n, send=ch.send):
                for obj in islice(cycle(pool), n):
                    send(obj)
        elif kind in ("shm-batch", "shm-chan-batch"):
            def loop(n, send_many=ch.send_many):
                for batch in islice(cycle(_batches(pool)), n // BATCH):
                    send_many(batch)
        elif kind == "shm-buffer":
            def loop(n, send=ch.send, buffer=ch.buffer):
                for _ in range(n):
                    send(buffer(size))
        else:
            def loop(n, send=ch.send):
                for _ in range(n):
                    send(payload)
        return ch, loop
    if kind in ("mp-queue", "mp-queue-batch"):
        q = mp.get_context("spawn").Queue()
        if kind == "mp-queue":
            def loop(n, put=q.put):
                for obj in islice(cycle(pool), n):
                    put(obj)
        else:
            def loop(n, put=q.put):
                for batch in islice(cycle(_batches(pool)), n // BATCH):
                    put(batch)
        return q, loop
    if kind in ("faster-fifo", "faster-fifo-batch"):
        ff, _ = _faster_fifo()
        q = ff.Queue(max_size_bytes=max(8 << 20, 4 * size + (1 << 20)))
        if kind == "faster-fifo":
            def loop(n, put=q.put):
                for obj in islice(cycle(pool), n):
                    put(obj, timeout=60)
        else:
            def loop(n, put_many=q.put_many):
                for batch in islice(cycle(_batches(pool)), n // BATCH):
                    put_many(batch, timeout=60)
        return q, loop
    if kind == "shared_memory":
        ctx = mp.get_context("spawn")
        recv_end, send_end = ctx.Pipe(duplex=False)
        from multiprocessing import shared_memory

        def make():
            try:
                return shared_memory.SharedMemory(create=True, size=size,
                                                  track=False)
            except TypeError:   # 3.12
                from multiprocessing import resource_tracker
                seg = shared_memory.SharedMemory(create=True, size=size)
                resource_tracker.unregister(seg._name, "shared_memory")
                return seg

        def loop(n, send=send_end.send):
            for _ in range(n):
                seg = make()
                send(seg.name)
                seg.close()
        return recv_end, loop
    raise ValueError(kind)


def _count(ctx, kind, size):
    """How many items one trial sends."""
    if size <= SMALL:
        n = 20_000 if ctx.quick else 200_000
    elif kind == "shm-buffer":
        n = 2_000 if ctx.quick else 20_000
    else:
        budget = (64 << 20) if ctx.quick else (1 << 30)
        n = max(3, min(2_000 if ctx.quick else 20_000, budget // size))
    return (n // BATCH) * BATCH if kind.endswith("-batch") else n


def _rate(ctx, kind, size):
    """Median items/s over ctx.repeat trials of kind at size."""
    far, loop = _make(kind, size)
    peer = _Peer(kind, far)
    rates = []
    try:
        n = _count(ctx, kind, size)
        # Copies of large sizes warm up with a couple of items only.
        warm = (2 * BATCH if size <= (1 << 20) or kind == "shm-buffer"
                else BATCH // 32)
        peer.start("drain", warm)
        loop(warm)                  # warm-up: the child is up and running
        peer.wait()
        for _ in range(ctx.repeat):
            peer.start("drain", n)
            t0 = time.perf_counter()
            loop(n)
            peer.wait()
            rates.append(n / (time.perf_counter() - t0))
    finally:
        peer.close()
        if hasattr(far, "close"):
            far.close()
    return {"n": n, "rates": rates, "median_msgs_per_s":
            common.median(rates),
            "median_bytes_per_s": common.median(rates) * size}


def _handoff(ctx, sizes, on_size=None):
    """The segment buffer hand-off at every size, the sizes interleaved:
    each has its channel and child up (and warm) before the first timed
    round; round r times them in a rotated order, reversed every other
    round.  {size: result} with the rates of every round."""
    n = _count(ctx, "shm-buffer", sizes[0])
    rounds = HANDOFF_ROUNDS_QUICK if ctx.quick else HANDOFF_ROUNDS
    rounds = max(rounds, ctx.repeat)
    peers, loops, rates = [], [], {s: [] for s in sizes}
    try:
        for size in sizes:
            far, loop = _make("shm-buffer", size)
            peers.append((_Peer("shm-buffer", far), far))
            loops.append(loop)
            peers[-1][0].start("drain", 2 * BATCH)
            loop(2 * BATCH)         # warm-up: every block made once
            peers[-1][0].wait()
        for r in range(rounds):
            order = list(range(len(sizes)))
            order = order[r % len(order):] + order[:r % len(order)]
            if r % 2:
                order.reverse()
            for i in order:
                peer = peers[i][0]
                peer.start("drain", n)
                t0 = time.perf_counter()
                loops[i](n)
                peer.wait()
                rates[sizes[i]].append(n / (time.perf_counter() - t0))
            if on_size is not None:
                on_size(r)
    finally:
        for peer, far in peers:
            peer.close()
            far.close()
    out = {}
    for size in sizes:
        med = common.median(rates[size])
        out[size] = {"n": n, "rates": rates[size], "median_msgs_per_s": med,
                     "best_msgs_per_s": max(rates[size]),
                     "median_bytes_per_s": med * size}
    return out


def _pingpong(ctx, kind):
    from tpshare import shm
    n = 1_000 if ctx.quick else 20_000
    if kind == "shm":
        a, b = shm.MemChannel(size=1 << 20), shm.MemChannel(size=1 << 20)
        send, recv = a.send, b.recv
    else:
        ctx_mp = mp.get_context("spawn")
        a_r, a_w = ctx_mp.Pipe(duplex=False)
        b_r, b_w = ctx_mp.Pipe(duplex=False)
        a, b = a_r, b_w
        send, recv = a_w.send_bytes, b_r.recv_bytes
    peer = _Peer(kind, a, b)
    msg = bytes(PINGPONG)
    clock = time.perf_counter_ns
    samples = []
    try:
        warm = 100
        peer.start("pong", warm + n * ctx.repeat)
        for i in range(warm + n * ctx.repeat):
            t0 = clock()
            send(msg)
            got = recv()
            t1 = clock()
            del got
            if i >= warm:
                samples.append(t1 - t0)
        peer.wait()
    finally:
        peer.close()
    samples.sort()
    return common.summary(samples)


def _pipeline_count(ctx, size):
    """How many items one trial of the pipeline sends."""
    if size <= SMALL:
        return 20_000 if ctx.quick else 200_000
    budget = (64 << 20) if ctx.quick else (1 << 30)
    return max(16, min(20_000, budget // size))


def _pipeline(ctx, where, size):
    """Items/s of the same-code pipeline, its consumer in another
    interpreter (tpshare.MemChannel) or another process
    (tpshare.shm.MemChannel)."""
    import tpshare
    from tpshare import shm

    from . import _remote
    n = _pipeline_count(ctx, size)
    payload = bytes(size)
    rates = []
    for _ in range(ctx.repeat):
        if where == "interpreters":
            inbox, outbox = tpshare.MemChannel(), tpshare.MemChannel()
            worker = tpshare.Interpreter()
            job = worker.call(_remote.pipeline_consumer, inbox, outbox, n)
        else:
            seg = max(64 << 20, min(64 * size, 1 << 30))
            inbox, outbox = shm.MemChannel(size=seg), shm.MemChannel()
            worker = mp.get_context("spawn").Process(
                target=_remote.pipeline_consumer, args=(inbox, outbox, n),
                daemon=True)
            worker.start()
        try:
            outbox.recv(timeout=120).release()      # the consumer is up
            t0 = time.perf_counter()
            send = inbox.send
            for _ in range(n):
                send(payload)
            outbox.recv(timeout=120).release()      # it has them all
            rates.append(n / (time.perf_counter() - t0))
        finally:
            if where == "interpreters":
                job.result(timeout=120)
                worker.close()
            else:
                worker.join(60)
                if worker.exitcode is None:
                    worker.kill()
    return {"n": n, "rates": rates,
            "median_msgs_per_s": common.median(rates)}


def steps(ctx, names=None):
    return (len(SMALL_NAMES) + (len(BUFFER_NAMES) - 1)
            * len(_buffer_sizes(ctx)) + 1
            + len(PING_NAMES) + len(CROSS_NAMES) * len(CROSS_SIZES))


def _buffer_sizes(ctx):
    if ctx.quick:
        return [4 << 10, 1 << 20, 16 << 20]
    return [4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]


def run(ctx, names=None):
    _, ff_missing = _faster_fifo()
    skipped, errors = {}, {}
    if ff_missing:
        skipped["faster-fifo"] = ff_missing
    small, buffers, ping = {}, {}, {}

    def attempt(kind, fn, *args):
        if kind.startswith("faster-fifo") and ff_missing:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - report, go on
            errors[f"{kind}"] = f"{type(exc).__name__}: {exc}"
            return None

    for kind in SMALL_NAMES:
        ctx.progress.step(f"shm: small {kind}")
        r = attempt(kind, _rate, ctx, kind, SMALL)
        if r:
            small[kind] = r
    sizes = _buffer_sizes(ctx)
    ctx.progress.step("shm: segment buffer hand-off, sizes interleaved")
    handoff = attempt("shm-buffer", _handoff, ctx, sizes) or {}
    for size in sizes:
        point = buffers.setdefault(str(size), {})
        if size in handoff:
            point["shm-buffer"] = handoff[size]
        for kind in BUFFER_NAMES:
            if kind == "shm-buffer":
                continue
            ctx.progress.step(f"shm: {common.fmt_size(size)} {kind}")
            if kind == "faster-fifo" and size > (64 << 20):
                skipped[f"faster-fifo {common.fmt_size(size)}"] = (
                    "a message must fit its ring, of 4x the message here: "
                    "left out above 64 MiB")
                continue
            r = attempt(kind, _rate, ctx, kind, size)
            if r:
                point[kind] = r
    for kind in PING_NAMES:
        ctx.progress.step(f"shm: ping-pong {kind}")
        r = attempt(kind, _pingpong, ctx, kind)
        if r:
            ping[kind] = r
    cross = {}
    for size in CROSS_SIZES:
        point = cross.setdefault(str(size), {})
        for where in CROSS_NAMES:
            ctx.progress.step(f"shm: pipeline {common.fmt_size(size)} "
                              f"between {where}")
            r = attempt(f"pipeline {where}", _pipeline, ctx, where, size)
            if r:
                point[where] = r
    return {"method": __doc__.strip(), "small": small, "buffers": buffers,
            "pingpong": ping, "pipeline": cross,
            "python": sys.version.split()[0],
            "skipped": skipped, "errors": errors}


def _ratio(a, b):
    if not a or not b:
        return "n/a"
    return common.fmt_ratio(a / b)


def _handoff_report(buffers):
    """The hand-off's rounds by size, and how flat its rate is."""
    pts = [(int(s), pt["shm-buffer"]) for s, pt in buffers.items()
           if "shm-buffer" in pt]
    if not pts:
        return []
    meds = [x["median_msgs_per_s"] for _, x in pts]
    mid = common.median(meds)
    rows = [[common.fmt_size(s), str(len(x["rates"])), str(x["n"]),
             common.fmt_rate(x.get("best_msgs_per_s", max(x["rates"]))),
             common.fmt_rate(x["median_msgs_per_s"]),
             f"{x['median_msgs_per_s'] / mid:.2f}"] for s, x in pts]
    return [
        "\nSegment buffer hand-off alone: buffer(n), send, recv in the "
        "child, release; nothing\ntouches the payload.  The sizes take "
        "turns in each round (a different order each\nround); hand-offs/s "
        "per round",
        common.table(["size", "rounds", "n/round", "best", "median",
                      "median / median of sizes"], rows),
        f"spread of the medians (largest / smallest): "
        f"{max(meds) / min(meds):.2f}"]


def report(res):
    lines = ["\nBetween processes (tpshare.shm): 64-byte messages, main "
             "process -> a child process"]
    small = res["small"]
    refs = [r for r in ("mp-queue", "faster-fifo") if r in small]
    rows = []
    for kind, x in small.items():
        rate = x["median_msgs_per_s"]
        rows.append([LABELS[kind], str(x["n"]), common.fmt_rate(rate)]
                    + [_ratio(rate, small[r]["median_msgs_per_s"])
                       for r in refs])
    lines.append(common.table(
        ["contender", "n", "messages/s"] + [f"/ {LABELS[r]}" for r in refs],
        rows))
    lines.append("\nBuffers: messages/s (bytes/s) by size.  The segment "
                 "buffer row is the hand-off alone\n(buffer(n), send, recv, "
                 "release: nothing writes the payload)")
    sizes = list(res["buffers"])
    kinds = [k for k in BUFFER_NAMES
             if any(k in res["buffers"][s] for s in sizes)]
    rows = []
    for kind in kinds:
        row = [LABELS[kind]]
        for s in sizes:
            x = res["buffers"][s].get(kind)
            row.append(f"{common.fmt_rate(x['median_msgs_per_s'])} "
                       f"({common.fmt_bytes_rate(x['median_bytes_per_s'])})"
                       if x else "n/a")
        rows.append(row)
    lines.append(common.table(
        ["contender"] + [common.fmt_size(int(s)) for s in sizes], rows))
    lines += _handoff_report(res["buffers"])
    rows = []
    for s in sizes:
        pt = res["buffers"][s]
        mine = pt.get("shm-buffer", {}).get("median_msgs_per_s")
        rows.append([common.fmt_size(int(s))] + [
            _ratio(mine, pt.get(k, {}).get("median_msgs_per_s"))
            for k in ("mp-queue", "faster-fifo", "shared_memory")])
    lines.append("\nSegment buffer hand-off / each baseline (above 1: "
                 "tpshare.shm faster)")
    lines.append(common.table(
        ["size", "/ multiprocessing.Queue", "/ faster-fifo",
         "/ shared_memory + Pipe"], rows))
    ping = res["pingpong"]
    if ping:
        lines.append(f"\nPing-pong round trip ({PINGPONG} bytes each way)")
        rows = [[LABELS[k], str(x["n"])] + [common.fmt_ns(x[f]) for f in
                                            ("min_ns", "median_ns",
                                             "p90_ns", "p99_ns")]
                for k, x in ping.items()]
        lines.append(common.table(["contender", "n", "min", "median", "p90",
                                   "p99"], rows))
    cross = res.get("pipeline") or {}
    if cross:
        lines.append("\nThe same producer/consumer code between two "
                     "interpreters (tpshare.MemChannel)\nand between two "
                     "processes (tpshare.shm.MemChannel): items/s")
        rows = []
        for s, pt in cross.items():
            a = pt.get("interpreters", {}).get("median_msgs_per_s")
            b = pt.get("processes", {}).get("median_msgs_per_s")
            rows.append([common.fmt_size(int(s)),
                         common.fmt_rate(a) if a else "n/a",
                         common.fmt_rate(b) if b else "n/a",
                         _ratio(a, b)])
        lines.append(common.table(
            ["size", "interpreters", "processes",
             "interpreters / processes"], rows))
    lines += common.problems(res)
    return "\n".join(lines)
