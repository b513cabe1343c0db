"""Cost of one share + rebuild + release in a single interpreter, per value
type, tpshare beside CPython's own cross-interpreter data in the same run.

tpshare:  tpshare.share(v).rebuild(), the Shared then dropped (which
          releases its record).
baseline: restore_crossinterp_data(get_crossinterp_data(v)), the capsule
          then dropped (which releases and frees the data); from
          _testinternalcapi on 3.13, _testcapi on 3.12.

Values: None (the floor: no allocation on either side), a small int, a
16-character str, 64 bytes, a float, the tuple (1, "abc", 2.5) and a tuple
of 16 distinct ints (how tuples scale).  Figures are the median over rounds
of ns per operation, loop overhead included (see "empty loop iteration" in
the header); ratio = baseline / tpshare, the median of the ratios of the
two timed side by side in each round, so above 1 means tpshare is faster.
Nothing crosses an interpreter here: this is the fixed cost of the
registry and of the records.

Limits: the baseline goes through CPython's test wrappers, which parse
their arguments with PyArg_Parse* and wrap the data in a capsule (plus a
raw allocation for the data); tpshare allocates a Shared object and a raw
record.  The None row shows these fixed costs.
"""

import itertools
import sys

import tpshare
from tpshare.bench import common, scripts

VALUES = [
    ("None", None),
    ("int", 12345),
    ("str16", "abcdefghijklmnop"),
    ("bytes64", bytes(range(64))),
    ("float", 2.5),
    ("tuple3", (1, "abc", 2.5)),
    ("tuple16", tuple(range(1000, 1016))),
]


def baseline_api():
    """(get, restore, where) for CPython's cross-interpreter data, or
    (None, None, reason) when this Python does not expose it."""
    for modname in ("_testinternalcapi", "_testcapi"):
        try:
            mod = __import__(modname)
        except ImportError:
            continue
        get = getattr(mod, "get_crossinterp_data", None)
        restore = getattr(mod, "restore_crossinterp_data", None)
        if get is not None and restore is not None:
            return get, restore, f"{modname}.get/restore_crossinterp_data"
    return None, None, "no get_crossinterp_data in _testinternalcapi or _testcapi"


def baseline_unsupported(get, restore, value):
    """None if CPython round-trips value, else the reason it cannot."""
    try:
        back = restore(get(value))
    except ValueError as exc:
        if "does not support cross-interpreter data" in str(exc):
            return f"{type(value).__name__} not shareable in {_python()}"
        return f"ValueError: {exc}"
    except (TypeError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if back != value or type(back) is not type(value):
        return f"round trip gives {back!r}"
    return None


def _python():
    return "CPython %d.%d.%d" % sys.version_info[:3]


def ours_loop(value):
    def loop(n, v=value, share=tpshare.share, clock=common.clock,
             repeat=itertools.repeat):
        it = repeat(None, n)
        t0 = clock()
        for _ in it:
            share(v).rebuild()
        return clock() - t0
    return loop


def baseline_loop(value, get, restore):
    def loop(n, v=value, get=get, restore=restore, clock=common.clock,
             repeat=itertools.repeat):
        it = repeat(None, n)
        t0 = clock()
        for _ in it:
            restore(get(v))
        return clock() - t0
    return loop


def measure(name, value, baseline, number_target_ns, repeat):
    """Time tpshare and the baseline (get, restore, where) on value;
    return the JSON result."""
    get, restore, where = baseline
    if tpshare.share(value).rebuild() != value:
        raise AssertionError(f"tpshare round trip of {value!r} failed")
    why_na = (where if get is None
              else baseline_unsupported(get, restore, value))
    loops = [ours_loop(value)]
    if why_na is None:
        loops.append(baseline_loop(value, get, restore))
    number = common.calibrate(loops[0], number_target_ns)
    for loop in loops:  # warm up
        loop(max(1, number // 4))
    times = common.interleaved(loops, number, repeat)
    result = {
        "value": name, "repr": repr(value), "number": number,
        "tpshare_ns": common.median(times[0]),
        "baseline_ns": None, "ratio": None, "baseline_na": why_na,
        "tpshare_all_ns": times[0], "baseline_all_ns": None,
    }
    if why_na is None:
        result.update(baseline_ns=common.median(times[1]),
                      ratio=common.paired_ratio(times[1], times[0]),
                      baseline_all_ns=times[1])
    return result


def main():
    args = scripts.parser(__doc__).parse_args()
    scripts.setup(args)
    repeat = args.repeat or (5 if args.quick else 15)
    target_ns = 2_000_000 if args.quick else 10_000_000

    scripts.print_header(
        "bench_registry: share + rebuild + release, one interpreter", __doc__)
    baseline = baseline_api()
    where = baseline[2]
    scripts.say(f"baseline: {where}")
    print(f"rounds: {repeat} (median reported), ~{target_ns / 1e6:.0f} ms "
          "per contender per round")
    print()

    common.empty_loop_ns(n=2_000_000)  # let the CPU settle before measuring
    results = [measure(name, value, baseline, target_ns, repeat)
               for name, value in VALUES]

    rows = [[
        r["value"],
        common.fmt_ns(r["tpshare_ns"]),
        (common.fmt_ns(r["baseline_ns"]) if r["baseline_na"] is None
         else f"n/a ({r['baseline_na']})"),
        common.fmt_ratio(r["ratio"]) if r["ratio"] is not None else "-",
    ] for r in results]
    scripts.print_table(["value", "tpshare", "CPython", "ratio"], rows)
    print()
    scripts.say("ratio = CPython / tpshare (above 1: tpshare faster), median "
                f"of the per-round ratios over {repeat} rounds; compare only "
                "within one run.")

    if args.json:
        scripts.write_json(args.json, "registry",
                           {"repeat": repeat, "target_ns": target_ns,
                            "baseline": where}, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
