"""Copy or share, by size: the rate of Channel send + recv between the main
interpreter and an isolated subinterpreter on another thread, for bytes
and str from 16 B to 64 KiB in fine steps (four sizes per octave; two
with --quick), in each of the ways a payload can cross:

auto:  the payload itself, as users send it: the handler of bytes and
       str picks the mode (copied below its threshold, from size classes
       up to 16 KiB; shared owner-bound from the threshold on).
copy:  (bytes) the payload copied at send into a tpshare.Buffer (memory
       of no interpreter), the receiver copying it into a bytes object:
       the copy mode's two copies, at every size.
share: (bytes) a memoryview of the sender's bytes (an owner-bound export),
       the receiver copying it into a bytes object and releasing the
       view: the share mode's one copy and trip home, at every size.

Each receiver ends with a bytes (or str) object it owns.  A trial sends n
items (cycling through up to 256 distinct payloads per size, so no copy
comes warm from the previous one) and is timed from the first send to the
receiver's clock after the n-th item; n is calibrated per size and mode
so that a trial lasts about --seconds.  Each round times every mode of a
size once, in alternating order; figures are medians over rounds, and
ratios the median of the per-round ratios (above 1: the second mode
faster).  Ratios within 5% of 1 count as ties.

The crossover is the smallest size from which sharing beats copying
(beyond a tie) at every larger size.  For bytes it is read twice: from
the handler's own copies (auto below the threshold, against share) and
from copy against share at every size.  The handler has no switch to force
str's mode from Python, so str is measured as sent (auto): the threshold
shows as the step between the two sizes around it.

Limits: rates move with the machine (other processes, the host moving
vCPUs); compare only figures of one run.  Time is all this measures: an
owner-bound record also keeps the sender's payload alive until the
receiver lets go.
"""

import gc
import os
import threading
import time

import tpshare
from tpshare import _stdinterp, _tpshare
from tpshare.bench import common, scripts

TIE = 0.05                      # ratios within 1 +- TIE are ties (noise)
POOL = 256                      # distinct payloads per size (at most)
POOL_BUDGET = 8 << 20           # payload bytes held per size and mode
CAPACITY = 1000                 # the Channel's bound

# The receiver: commands on ctl (n: receive n items; None: stop), the
# perf_counter() after the n-th item on res.
RECEIVER = """
import time
import tpshare

def serve(ctl_id, res_id, data_id):
    ctl = tpshare.Channel.from_id(ctl_id)
    res = tpshare.Channel.from_id(res_id)
    data = tpshare.Channel.from_id(data_id)
    recv = data.recv
    while True:
        n = ctl.recv()
        if n is None:
            break
        kinds = set()
        for _ in range(n):
            got = recv()
            if type(got) is memoryview:
                bytes(got)
                got.release()
            elif type(got) is not bytes and type(got) is not str:
                bytes(got)                  # a tpshare.Buffer
            kinds.add(type(got).__name__)
            del got
        res.send((time.perf_counter(), tuple(sorted(kinds))))
"""

MODES = {"bytes": ("auto", "copy", "share"), "str": ("auto",)}
# What the receiver gets in each mode (checked at every size).
RECEIVED = {"copy": "Buffer", "share": "memoryview"}


def sizes(per_octave, lo=16, hi=64 << 10):
    """lo .. hi, per_octave sizes per doubling (rounded to whole bytes)."""
    out = []
    i = 0
    while True:
        size = round(lo * 2 ** (i / per_octave))
        if size > hi:
            return out
        if not out or size != out[-1]:
            out.append(size)
        i += 1


def payloads(kind, size):
    """Distinct payloads of size bytes (or characters)."""
    k = max(2, min(POOL, POOL_BUDGET // size))
    base = os.urandom(size).hex()[:size].ljust(size, "x")
    objs = [(b"%08d" % i + base.encode())[:size] for i in range(k)]
    if kind == "str":
        return [b.decode("ascii") for b in objs]
    return objs


def sender(mode):
    """The send of one payload in a mode: (channel.send, payload) -> None."""
    if mode == "auto":
        return lambda send, b: send(b)
    if mode == "share":
        return lambda send, b, mv=memoryview: send(mv(b))

    def copy(send, b, Buffer=tpshare.Buffer, mv=memoryview):
        buf = Buffer(len(b))
        mv(buf)[:] = b
        send(buf)
    return copy


class Receiver:
    """The subinterpreter on its thread, with its three Channels."""

    def __init__(self):
        self.ctl = tpshare.Channel()
        self.res = tpshare.Channel()
        self.data = tpshare.Channel(CAPACITY)
        self.sub = _stdinterp.Subinterpreter()
        self.sub.run(RECEIVER)
        self.failed = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self):
        try:
            self.sub.run(f"serve({self.ctl.id}, {self.res.id}, "
                         f"{self.data.id})")
        except BaseException as exc:  # noqa: BLE001 - reported by trial()
            self.failed = exc

    def trial(self, objs, n, send_one):
        """Seconds to send n items (cycling through objs) until the
        receiver has the n-th; and the types it received."""
        self.ctl.send(n)
        send = self.data.send
        k = len(objs)
        gc.disable()
        try:
            t0 = time.perf_counter()
            for i in range(n):
                send_one(send, objs[i % k])
        finally:
            gc.enable()
        deadline = time.monotonic() + 300
        while True:
            try:
                t1, kinds = self.res.recv(timeout=0.5)
                break
            except tpshare.ChannelEmpty:
                if self.failed is not None or not self.thread.is_alive():
                    raise RuntimeError(f"the receiver failed: {self.failed!r}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver stopped answering")
        tpshare.drain()
        return t1 - t0, kinds

    def close(self):
        self.ctl.send(None)
        self.thread.join(60)
        self.sub.close()
        for ch in (self.ctl, self.res, self.data):
            ch.close()


def measure(rx, kind, size, seconds, repeat):
    """Every mode of kind at one size: the JSON record."""
    objs = payloads(kind, size)
    modes = MODES[kind]
    n = {}
    for mode in modes:
        n0 = max(2, min(2000, (16 << 20) // size))
        t, kinds = rx.trial(objs, n0, sender(mode))
        want = RECEIVED.get(mode, kind)
        if kinds != (want,):
            raise RuntimeError(f"{kind} {size} B {mode}: received {kinds}, "
                               f"expected {want}")
        n[mode] = max(10, min(2_000_000, int(seconds * n0 / max(t, 1e-9))))
    rates = {mode: [] for mode in modes}
    order = list(modes)
    for _ in range(repeat):
        for mode in order:
            t, _ = rx.trial(objs, n[mode], sender(mode))
            rates[mode].append(n[mode] / t)
        order.reverse()
    rec = {"kind": kind, "size": size, "n": n, "msgs_per_s": rates,
           "median_msgs_per_s": {m: common.median(r)
                                 for m, r in rates.items()}}
    if kind == "bytes":
        rec["share_vs_copy"] = common.paired_ratio(rates["share"],
                                                   rates["copy"])
        rec["share_vs_auto"] = common.paired_ratio(rates["share"],
                                                   rates["auto"])
    return rec


def measure_step(rx, kind, threshold, seconds, repeat):
    """The handler's own two modes side by side, as sent (auto): one byte
    below its threshold (copied) and at it (shared), timed in the same
    rounds; ratio = rate at / rate below (above 1: sharing faster)."""
    objs = {size: payloads(kind, size) for size in (threshold - 1, threshold)}
    send_one = sender("auto")
    n = {}
    for size, o in objs.items():
        n0 = max(2, min(2000, (16 << 20) // size))
        t, kinds = rx.trial(o, n0, send_one)
        if kinds != (kind,):
            raise RuntimeError(f"{kind} {size} B: received {kinds}")
        n[size] = max(10, min(2_000_000, int(seconds * n0 / max(t, 1e-9))))
    rates = {size: [] for size in objs}
    order = list(objs)
    for _ in range(repeat):
        for size in order:
            t, _ = rx.trial(objs[size], n[size], send_one)
            rates[size].append(n[size] / t)
        order.reverse()
    below, at = rates[threshold - 1], rates[threshold]
    return {"kind": kind, "below": threshold - 1, "at": threshold,
            "below_msgs_per_s": common.median(below),
            "at_msgs_per_s": common.median(at),
            "ratio": common.paired_ratio(at, below)}


def crossover(results, key, below=None):
    """The smallest size from which sharing wins (ratio key above 1 + TIE)
    at every larger size measured (sizes below `below` only); None if it
    never does."""
    rows = [r for r in results
            if r.get(key) is not None and (below is None or r["size"] < below)]
    cross = None
    for r in reversed(rows):
        if r[key] > 1 + TIE:
            cross = r["size"]
        else:
            break
    return cross


def fmt_ratio(x):
    if x is None:
        return "n/a"
    tag = "tie" if abs(x - 1) <= TIE else ("share" if x > 1 else "copy")
    return f"{common.fmt_ratio(x)} {tag}"


def main():
    p = scripts.parser(__doc__)
    p.add_argument("--seconds", type=float, default=None,
                   help="target length of a trial (default 0.1; 0.03 with "
                        "--quick)")
    p.add_argument("--per-octave", type=int, default=None,
                   help="sizes per doubling (default 4; 2 with --quick)")
    p.add_argument("--kinds", nargs="+", choices=tuple(MODES),
                   default=list(MODES), help="payload kinds (default both)")
    args = p.parse_args()
    scripts.setup(args)
    repeat = args.repeat or (3 if args.quick else 7)
    seconds = args.seconds or (0.03 if args.quick else 0.1)
    per_octave = args.per_octave or (2 if args.quick else 4)
    threshold = _tpshare._bytes_threshold()

    scripts.print_header("bench_copy_sweep: Channel send + recv, copy vs "
                         "share, main -> subinterpreter thread", __doc__)
    print(f"threshold of the bytes and str handlers: "
          f"{common.fmt_size(threshold)}; rounds: {repeat}; trials of "
          f"about {seconds * 1e3:.0f} ms; {per_octave} sizes per octave"
          + (" (--quick: noisy)" if args.quick else ""))
    print()
    results, steps = [], {}
    rx = Receiver()
    try:
        for kind in args.kinds:
            for size in sizes(per_octave):
                results.append(measure(rx, kind, size, seconds, repeat))
            steps[kind] = measure_step(rx, kind, threshold, seconds, repeat)
    finally:
        rx.close()
    left = tpshare.stats().get(tpshare.interpreter_id(), {})
    if left.get("exports") or left.get("pending"):
        raise AssertionError(f"records left behind: {left}")

    for kind in args.kinds:
        rows = []
        for r in results:
            if r["kind"] != kind:
                continue
            med = r["median_msgs_per_s"]
            row = [common.fmt_size(r["size"])]
            row += [common.fmt_rate(med[m]) for m in MODES[kind]]
            if kind == "bytes":
                row += [fmt_ratio(r["share_vs_copy"]),
                        fmt_ratio(r["share_vs_auto"])
                        if r["size"] < threshold else "(same mode)"]
            rows.append(row)
        heads = ["size"] + [f"{m} msgs/s" for m in MODES[kind]]
        if kind == "bytes":
            heads += ["share / copy", "share / auto"]
        print(f"{kind}: median rate of Channel send + recv over {repeat} "
              "rounds")
        scripts.print_table(heads, rows)
        print()

    fs = common.fmt_size
    summary = {"steps": steps}
    for kind, st in steps.items():
        scripts.say(
            f"{kind}, the handler's own modes (as sent): "
            f"{common.fmt_rate(st['below_msgs_per_s'])} at {st['below']} B "
            f"(copied), {common.fmt_rate(st['at_msgs_per_s'])} at "
            f"{st['at']} B (shared): shared / copied {fmt_ratio(st['ratio'])}")
    if "bytes" in args.kinds:
        bytes_rows = [r for r in results if r["kind"] == "bytes"]
        vs_copy = crossover(bytes_rows, "share_vs_copy")
        vs_auto = crossover(bytes_rows, "share_vs_auto", below=threshold)
        summary.update({"crossover_share_vs_copy": vs_copy,
                        "crossover_share_vs_auto_below_threshold": vs_auto})
        scripts.say(
            "bytes, share (memoryview) against copy (Buffer): sharing "
            + (f"wins from {fs(vs_copy)} on" if vs_copy else
               "does not win at every larger size"))
        scripts.say(
            "bytes, share (memoryview) against the handler's copies (auto, "
            f"below {fs(threshold)}): sharing "
            + (f"wins from {fs(vs_auto)} up to the threshold"
               if vs_auto else "does not win up to the threshold"))
        scripts.say(
            "copy and share are stand-ins built from Python (a Buffer, a "
            "memoryview: an object more on each side than the handler's "
            "modes); the handler's own crossover is read from auto: "
            f"its copies below {fs(threshold)} (TPS_BYTES_SHARE_MIN), its "
            "sharing from there on, and its step at the threshold "
            "(above).  Ratios within "
            f"1 +- {TIE} are ties.")
    if args.json:
        scripts.write_json(args.json, "copy_sweep", {
            "repeat": repeat, "seconds": seconds, "per_octave": per_octave,
            "threshold": threshold, **summary}, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
