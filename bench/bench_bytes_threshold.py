"""Where sharing bytes owner-bound beats copying them: the cost of one full
cross-interpreter transfer of a payload of bytes, per size from 64 B to
64 MiB, in the two modes of tpshare's bytes handler, each measured directly
at every size (the handler itself switches at a fixed size, its threshold,
which this run checks):

copy:  the record gets its own copy at send (neutral record, freed where it
       is released); the receiver copies again.  Two copies.  Measured as a
       tpshare.Buffer filled from the bytes at send, copied into a bytes
       object by the receiver.
share: the record keeps a reference to the sender's memory (owner-bound);
       the receiver copies once, straight from the sender's memory, and the
       release goes back to the owner's release list.  One copy, plus the
       trip home.  Measured as a memoryview of the sender's bytes, copied
       into a bytes object by the receiver.

A transfer is: the main interpreter shares and detaches; a real isolated
subinterpreter attaches, rebuilds and drops the Shared (releasing it); the
main interpreter then drains its release list (tpshare.drain()), so both
modes pay for the whole round trip.  Transfers are batched so the cost of
entering the subinterpreter does not drown the signal: the main
interpreter detaches K records (consecutive tokens) of K distinct bytes
objects, one run() call handles all K, and the time of an empty batch,
measured in the same round, is subtracted before dividing by K.  K comes
from a budget of bytes in flight per batch (default 16 MiB; at least 2,
at most 10,000 transfers), enough to keep a batch well above the noise of
the empty one.  glibc's malloc is put in the state a long-running process
reaches (see steady_malloc()) unless --malloc-defaults is given.

Figures are medians over rounds of ns per transfer; ratio = copy / share
(above 1: sharing is faster) is the median of the per-round ratios of the
two modes timed side by side, so it can differ from the ratio of the two
medians.  Ratios within 5% of 1 count as ties.  The crossover is the
smallest size from which sharing wins (beyond a tie) at every larger size
too; it is compared with the threshold of the C code
(tpshare._tpshare._bytes_threshold(), read-only), after checking that
bytes below it are copied and bytes at it are shared.

Limits: both interpreters run on the calling thread, one after the other,
so no data crosses between CPU cores, and the owner is never busy
elsewhere when its releases arrive.  Time is all this measures: an
owner-bound record also keeps the sender's bytes alive until the receiver
lets go, and needs the owner to drain its release list.
"""

import os

import tpshare
from tpshare import _stdinterp, _tpshare
from tpshare.bench import common, scripts

MAX_K = 10_000                  # transfers per batch, small sizes
MIN_K = 2                       # transfers per batch, largest sizes
TIE = 0.05                      # ratios within 1 +- TIE are ties (noise)
CLEAR_WIN = 1.25                # a margin well above this run's noise

RECEIVER = """
import tpshare

def work(first, n, attach=tpshare.attach):
    for token in range(first, first + n):
        got = attach(token).rebuild()
        bytes(got)
        if type(got) is memoryview:
            got.release()
"""


def sizes(step, lo=64, hi=64 << 20):
    out = []
    n = lo
    while n <= hi:
        out.append(n)
        n *= step
    return out


def batch_size(size, budget):
    return max(MIN_K, min(MAX_K, budget // size))


def make_sources(size, k):
    """k distinct bytes objects of size bytes (random contents, all pages
    touched), so no transfer reads memory another one warmed up."""
    base = os.urandom(size)
    return [bytes(memoryview(base)) for _ in range(k)]


def copy_mode(b, Buffer=tpshare.Buffer, share=tpshare.share):
    """The copy mode's send: b copied into memory of no interpreter."""
    buf = Buffer(len(b))
    memoryview(buf)[:] = b
    return share(buf)


def share_mode(b, share=tpshare.share):
    """The share mode's send: a record of the sender's own memory."""
    return share(memoryview(b))


def batch_loop(sub, sources, send):
    """A timing function: one batch of len(sources) transfers, each sent
    with send(b) (copy_mode or share_mode), ns for the whole batch."""
    k = len(sources)
    run = sub.run

    def loop(_number, sources=sources, send=send, drain=tpshare.drain,
             clock=common.clock):
        t0 = clock()
        it = iter(sources)
        first = last = send(next(it)).detach()
        for b in it:
            last = send(b).detach()
        run(f"work({first}, {k})")
        drain()
        run("pass")  # settle: see empty_batch_loop()
        elapsed = clock() - t0
        if last - first != k - 1:
            raise RuntimeError("tokens were not consecutive: another "
                               "thread detached records during the batch")
        return elapsed
    return loop


def empty_batch_loop(sub):
    """A timing function for a batch of no transfers, whose time is
    subtracted from every batch of the same round.

    Every batch, empty or not, ends with a second run() call that does
    nothing: the first entry into the subinterpreter after a batch is
    slower by some 5-20 ns per transfer of that batch (deferred allocator
    work: glibc consolidating the chunks the batch freed), and it must be
    charged to the batch that caused it, not to the next contender."""
    def loop(_number, run=sub.run, drain=tpshare.drain, clock=common.clock):
        t0 = clock()
        run("work(0, 0)")
        drain()
        run("pass")
        return clock() - t0
    return loop


def check_modes(size):
    """The two modes as measured: copy_mode makes a neutral record,
    share_mode an owner-bound one."""
    probe = bytes(size)
    copied = copy_mode(probe)
    shared = share_mode(probe)
    if copied.bound or not shared.bound:
        raise AssertionError(f"modes not as measured for {size} B: copy "
                             f"bound={copied.bound}, share "
                             f"bound={shared.bound}")
    copied.release()
    shared.release()


def check_threshold(threshold):
    """The bytes handler copies below its threshold and shares at it."""
    below = tpshare.share(bytes(threshold - 1))
    at = tpshare.share(bytes(threshold))
    if below.bound or not at.bound:
        raise AssertionError(f"bytes handler: {threshold - 1} B bound="
                             f"{below.bound}, {threshold} B bound={at.bound}")
    below.release()
    at.release()


def winner(ratio):
    if ratio > 1 + TIE:
        return "share"
    if ratio < 1 - TIE:
        return "copy"
    return "tie"


def crossover(results):
    """(smallest size from which share is faster, beyond a tie, at every
    larger size too, or None; largest size at which copy still won or
    tied, or None)."""
    cross = last_copy = None
    for r in results:
        if winner(r["ratio"]) == "share":
            if cross is None:
                cross = r["size"]
        else:
            cross = None
            last_copy = r["size"]
    return cross, last_copy


def first_clear_win(results, cross):
    """Smallest size at or above cross from which share wins by at least
    CLEAR_WIN at every larger size, or None."""
    clear = None
    for r in results:
        if cross is None or r["size"] < cross:
            continue
        if r["ratio"] >= CLEAR_WIN:
            if clear is None:
                clear = r["size"]
        else:
            clear = None
    return clear


def verdict(results, cross, last_copy, clear, default):
    """Lines saying whether the default threshold agrees with the run."""
    fs = common.fmt_size
    if cross is None:
        return [f"sharing never wins consistently: the default threshold "
                f"({fs(default)}) is too low"]
    where = ("at every size measured" if last_copy is None
             else f"above {fs(last_copy)} (copy still wins or ties there)")
    lines = [f"sharing wins {where}"]
    at_default = [r for r in results if r["size"] == default]
    if default < cross / 2:
        lines.append(f"the default threshold ({fs(default)}) is below the "
                     "crossover: copying is faster just above it; it disagrees")
    elif default <= cross * 2:
        lines.append(f"the default threshold ({fs(default)}) agrees with the "
                     "crossover (within a factor of 2)")
    else:
        gain = (f"; sharing is {at_default[0]['ratio']:.2f}x faster there"
                if at_default else "")
        lines.append(f"the default threshold ({fs(default)}) is well above "
                     f"the crossover{gain}: for speed alone it could be lower")
    if clear is not None:
        lines.append(f"sharing is at least {CLEAR_WIN:.2f}x faster from "
                     f"{fs(clear)} on")
    return lines


def measure(sub, size, budget, repeat):
    """Time both modes at one size; return the JSON result."""
    check_modes(size)
    k = batch_size(size, budget)
    sources = make_sources(size, k)
    loops = [batch_loop(sub, sources, copy_mode),
             batch_loop(sub, sources, share_mode),
             empty_batch_loop(sub)]
    for loop in loops:  # warm up: allocator, token table, caches
        loop(1)
    copy_raw, share_raw, empty = common.interleaved(loops, 1, repeat)
    copy_all = [(t - e) / k for t, e in zip(copy_raw, empty)]
    share_all = [(t - e) / k for t, e in zip(share_raw, empty)]
    if min(copy_all + share_all) <= 0:
        raise RuntimeError(f"{size} B: a batch of {k} took less than an empty "
                           "one; raise --budget")
    return {
        "size": size, "k": k,
        "copy_ns": common.median(copy_all), "share_ns": common.median(share_all),
        "ratio": common.paired_ratio(copy_all, share_all),
        "empty_batch_ns": common.median(empty),
        "copy_all_ns": copy_all, "share_all_ns": share_all,
    }


def main():
    p = scripts.parser(__doc__)
    p.add_argument("--step", type=int, default=None,
                   help="size factor between rows (default 2; 4 with --quick)")
    p.add_argument("--budget", type=int, default=16 << 20, metavar="BYTES",
                   help="bytes per batch, which sets K (default 16 MiB)")
    p.add_argument("--malloc-defaults", action="store_true",
                   help="leave glibc's malloc thresholds at their defaults")
    args = p.parse_args()
    scripts.setup(args)
    repeat = args.repeat or (3 if args.quick else 7)
    step = args.step or (4 if args.quick else 2)

    threshold = _tpshare._bytes_threshold()
    check_threshold(threshold)
    malloc_note = ("malloc: glibc defaults (--malloc-defaults)"
                   if args.malloc_defaults else common.steady_malloc())
    scripts.print_header(
        "bench_bytes_threshold: copy vs share for bytes, main -> subinterpreter",
        __doc__)
    results = []
    with _stdinterp.Subinterpreter() as sub:
        sub.run(RECEIVER)
        print(f"threshold of the bytes handler: {common.fmt_size(threshold)}")
        print(f"rounds: {repeat} (median reported); batch budget "
              f"{common.fmt_size(args.budget)}, K = {MIN_K}..{MAX_K}")
        scripts.say(malloc_note)
        print("per size, each round times a batch in each mode and an "
              "empty batch, subtracted")
        print()
        for size in sizes(step):
            results.append(measure(sub, size, args.budget, repeat))
    left = tpshare.stats().get(tpshare.interpreter_id(), {})
    if left.get("exports") or left.get("pending"):
        raise AssertionError(f"records left behind: {left}")

    rows = [[
        common.fmt_size(r["size"]), str(r["k"]),
        common.fmt_ns(r["copy_ns"]), common.fmt_ns(r["share_ns"]),
        common.fmt_ratio(r["ratio"]), winner(r["ratio"]),
        common.fmt_ns(r["empty_batch_ns"]),
    ] for r in results]
    scripts.print_table(["size", "K", "copy", "share", "ratio", "faster",
                         "empty batch"], rows)
    print()
    scripts.say("ratio = copy / share (above 1: sharing faster), median of "
                f"the per-round ratios over {repeat} rounds; within 1 +- "
                f"{TIE} is a tie; compare only within one run.")
    cross, last_copy = crossover(results)
    clear = first_clear_win(results, cross)
    print(f"crossover: {common.fmt_size(cross) if cross else 'none'}")
    for line in verdict(results, cross, last_copy, clear, threshold):
        scripts.say(line)

    if args.json:
        scripts.write_json(args.json, "bytes_threshold", {
            "repeat": repeat, "step": step, "budget": args.budget,
            "malloc": malloc_note,
            "default_threshold": threshold,
            "crossover": cross, "last_copy_win": last_copy,
            "clear_win_from": clear, "clear_win_ratio": CLEAR_WIN,
        }, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
