"""Copy or share, by size: the rate of Channel send + recv between the main
interpreter and an isolated subinterpreter on another thread, for bytes
and str from 16 B to 64 KiB in fine steps (four sizes per octave; two
with --quick), in each mode of the bytes and str handlers:

auto:  as users send them: the handler copies below its threshold
       (inline up to 16 B, then into size classes or raw memory) and
       shares owner-bound from the threshold on.
copy:  the handler forced to copy at every size (copied at send into the
       record, copied again by the receiver into its object).
share: the handler forced to share owner-bound at every size (the record
       holds the sender's object; the receiver copies once out of it and
       the record goes home to the sender to be released).

bytes and str of up to 120 bytes of payload cross a channel as immediate
items (a compact block, made without the handler), so the three modes are
the same path there; the table marks those rows.

The modes are forced with tpshare.bench._probes._share_min(), which sets
the threshold the handlers read (process-wide; restored after each
trial); every size and mode is checked to give the mode asked for
(tpshare.share(payload).bound).  Each receiver ends with a bytes (or
str) object it owns.  A trial sends n items (cycling through up to 256
distinct payloads per size, so no copy comes warm from the previous one)
and is timed from the first send to the receiver's clock after the n-th
item; n is calibrated per size and mode so that a trial lasts about
--seconds.  Each round times every mode of a size once, in alternating
order; figures are medians over rounds, and ratios the median of the
per-round ratios (share / copy above 1: sharing faster).  Ratios within
5% of 1 count as ties.

The crossover is the smallest size from which sharing beats copying
(beyond a tie) at every larger size measured, read for bytes and for
str.

Limits: rates move with the machine (other processes, the host moving
vCPUs); compare only figures of one run.  Time is all this measures: an
owner-bound record also keeps the sender's payload alive until the
receiver lets go.
"""

import gc
import os
import threading
import time

import sys

import tpshare
from tpshare import _stdinterp, _tpshare
from tpshare.bench import _probes, common, scripts

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
            kinds.add(type(got).__name__)
            del got
        res.send((time.perf_counter(), tuple(sorted(kinds))))
"""

MODES = ("auto", "copy", "share")
# The payload of the channels' immediate items at most (src/item.h,
# TPS_COMPACT_MAX): up to it the handler is not used, whatever the mode.
COMPACT_MAX = 120
KINDS = ("bytes", "str")


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


def share_min(mode, threshold):
    """The handlers' threshold that gives mode."""
    return {"auto": threshold, "copy": sys.maxsize, "share": 0}[mode]


def check_mode(obj, mode, threshold):
    """Raise unless the handler, as set now, gives mode for obj."""
    with tpshare.share(obj) as s:
        bound = s.bound
    want = (mode == "share"
            or (mode == "auto" and len(obj) >= threshold))
    if bound != want:
        raise RuntimeError(f"{type(obj).__name__} {len(obj)} B {mode}: "
                           f"{'shared' if bound else 'copied'}")


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

    def trial(self, objs, n, mode, threshold):
        """Seconds to send n items (cycling through objs) in a mode of the
        handler until the receiver has the n-th; and the types it
        received."""
        self.ctl.send(n)
        send = self.data.send
        k = len(objs)
        _probes._share_min(share_min(mode, threshold))
        gc.disable()
        try:
            check_mode(objs[0], mode, threshold)
            t0 = time.perf_counter()
            for i in range(n):
                send(objs[i % k])
        finally:
            gc.enable()
            _probes._share_min(threshold)
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


def measure(rx, kind, size, seconds, repeat, threshold):
    """Every mode at one size: the JSON record."""
    objs = payloads(kind, size)
    n = {}
    for mode in MODES:
        n0 = max(2, min(2000, (16 << 20) // size))
        t, kinds = rx.trial(objs, n0, mode, threshold)
        if kinds != (kind,):
            raise RuntimeError(f"{kind} {size} B {mode}: received {kinds}")
        n[mode] = max(10, min(2_000_000, int(seconds * n0 / max(t, 1e-9))))
    rates = {mode: [] for mode in MODES}
    order = list(MODES)
    for _ in range(repeat):
        for mode in order:
            t, _ = rx.trial(objs, n[mode], mode, threshold)
            rates[mode].append(n[mode] / t)
        order.reverse()
    return {"kind": kind, "size": size, "n": n, "msgs_per_s": rates,
            "median_msgs_per_s": {m: common.median(r)
                                  for m, r in rates.items()},
            "share_vs_copy": common.paired_ratio(rates["share"],
                                                 rates["copy"])}


def crossover(results, key="share_vs_copy"):
    """The smallest size from which sharing wins (ratio key above 1 + TIE)
    at every larger size measured; None if it never does."""
    cross = None
    for r in reversed(results):
        if r.get(key) is not None and r[key] > 1 + TIE:
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
    p.add_argument("--min-size", type=int, default=16,
                   help="smallest size in bytes (default 16)")
    p.add_argument("--max-size", type=int, default=64 << 10,
                   help="largest size in bytes (default 64 KiB)")
    p.add_argument("--kinds", nargs="+", choices=KINDS,
                   default=list(KINDS), help="payload kinds (default both)")
    args = p.parse_args()
    scripts.setup(args)
    repeat = args.repeat or (3 if args.quick else 7)
    seconds = args.seconds or (0.03 if args.quick else 0.1)
    per_octave = args.per_octave or (2 if args.quick else 4)
    threshold = _tpshare._bytes_threshold()
    if _probes._share_min() != threshold:
        raise RuntimeError("the handlers' threshold is already forced")

    scripts.print_header("bench_copy_sweep: Channel send + recv, the "
                         "handler's copy vs share, main -> subinterpreter "
                         "thread", __doc__)
    print(f"threshold of the bytes and str handlers: "
          f"{common.fmt_size(threshold)}; rounds: {repeat}; trials of "
          f"about {seconds * 1e3:.0f} ms; {per_octave} sizes per octave"
          + (" (--quick: noisy)" if args.quick else ""))
    print()
    results = []
    rx = Receiver()
    try:
        for kind in args.kinds:
            for size in sizes(per_octave, lo=args.min_size,
                              hi=args.max_size):
                results.append(measure(rx, kind, size, seconds, repeat,
                                       threshold))
    finally:
        _probes._share_min(threshold)
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
            # Every payload is ASCII: size is its bytes of payload.
            row = [common.fmt_size(r["size"])
                   + (" (immediate)" if r["size"] <= COMPACT_MAX else "")]
            row += [common.fmt_rate(med[m]) for m in MODES]
            row.append(fmt_ratio(r["share_vs_copy"]))
            rows.append(row)
        heads = (["size"] + [f"{m} msgs/s" for m in MODES]
                 + ["share / copy"])
        print(f"{kind}: median rate of Channel send + recv over {repeat} "
              "rounds")
        scripts.print_table(heads, rows)
        print()

    fs = common.fmt_size
    summary = {}
    for kind in args.kinds:
        cross = crossover([r for r in results if r["kind"] == kind])
        summary[f"crossover_{kind}"] = cross
        scripts.say(
            f"{kind}, the handler's share against its copy: sharing "
            + (f"wins from {fs(cross)} on" if cross else
               "does not win at every larger size")
            + f" (the threshold is {fs(threshold)}; ratios within "
            f"1 +- {TIE} are ties)")
    if args.json:
        scripts.write_json(args.json, "copy_sweep", {
            "repeat": repeat, "seconds": seconds, "per_octave": per_octave,
            "threshold": threshold, **summary}, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
