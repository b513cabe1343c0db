"""Throughput of CPU-bound pure-Python work on a pool of tpshare
interpreters, beside a process pool and a thread pool, same work, same run.

Contenders: tpshare.Pool (isolated interpreters with their own GIL, in this
process), concurrent.futures.ProcessPoolExecutor (spawned processes) and
concurrent.futures.ThreadPoolExecutor (threads sharing one GIL), each with
1 and 2 workers by default.  The work is a batch of identical tasks, each
counting primes by trial division (pure Python, no I/O, a small int in and
out, so transport costs are negligible and the figure is parallelism).
Every pool is started and warmed up before timing; the main thread only
submits the batch and then blocks on the futures.  Rounds interleave the
contenders, so a change of CPU speed hits all alike.  Reported: the median
batch time, tasks per second, the speed-up over the same kind of pool with
1 worker (median of per-round ratios), and the throughput ratio
tpshare/process per worker count (target: >= 0.9 at 2 workers on 2 cores).

Limits: the speed-ups need as many free cores as workers (the header
prints the CPU affinity); `--cpu N` pins everything to one CPU and so
measures overhead, not parallelism.  Start-up costs (creating interpreters
or processes) are excluded.
"""

import os
import time

import tpshare
from tpshare.bench import common, scripts


def work(n):
    """The task: count the primes below n by trial division."""
    count = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def make_pools(kinds, worker_counts):
    """{(kind, workers): executor}, process pools first (no threads of
    ours exist yet when they spawn)."""
    import concurrent.futures
    import multiprocessing

    makers = {
        "process": lambda n: concurrent.futures.ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn")),
        "tpshare": tpshare.Pool,
        "thread": concurrent.futures.ThreadPoolExecutor,
    }
    pools = {}
    for kind in sorted(kinds, key=["process", "tpshare", "thread"].index):
        for n in worker_counts:
            pools[kind, n] = makers[kind](n)
    return pools


def warm_up(pool, workers, size):
    # Enough tasks that every worker starts, imports this module and runs.
    for f in [pool.submit(work, size // 10) for _ in range(4 * workers)]:
        f.result()


def run_batch(pool, tasks, size):
    """Seconds to run `tasks` tasks on pool, the main thread blocked on
    the futures meanwhile."""
    t0 = time.perf_counter()
    futures = [pool.submit(work, size) for _ in range(tasks)]
    for f in futures:
        f.result()
    return time.perf_counter() - t0


def main():
    p = scripts.parser(__doc__)
    p.add_argument("--workers", default="1,2", metavar="N,N",
                   help="worker counts to measure (default 1,2; 1 is "
                        "always measured, for the speed-ups)")
    p.add_argument("--tasks", type=int, metavar="N",
                   help="tasks per batch (default 24, --quick 8)")
    p.add_argument("--size", type=int, default=20000, metavar="N",
                   help="each task counts primes below N (default 20000, "
                        "about 35 ms of CPU on a 2020s core)")
    p.add_argument("--kinds", default="tpshare,process,thread",
                   help="pools to compare (default tpshare,process,thread)")
    args = p.parse_args()
    scripts.setup(args)
    counts = sorted({1, *(int(x) for x in args.workers.split(","))})
    kinds = [k.strip() for k in args.kinds.split(",")]
    tasks = args.tasks or (8 if args.quick else 24)
    repeat = args.repeat or (2 if args.quick else 5)

    scripts.print_header("bench_pool: CPU-bound work on worker pools",
                         __doc__)
    free = len(os.sched_getaffinity(0))
    print(f"work: {tasks} tasks per batch, each work({args.size}); "
          f"{repeat} rounds; workers {counts}; {free} CPU(s) available")
    if max(counts) > free:
        print(f"warning: {max(counts)} workers on {free} CPU(s): the "
              "speed-ups cannot show parallelism")
    print()

    pools = make_pools(kinds, counts)
    try:
        for (kind, n), pool in pools.items():
            warm_up(pool, n, args.size)
        order = list(pools)
        times = {key: [] for key in order}
        for _ in range(repeat):
            for key in order:
                times[key].append(run_batch(pools[key], tasks, args.size))
            order.reverse()
    finally:
        for pool in pools.values():
            pool.shutdown()

    rows, results = [], []
    for (kind, n), ts in times.items():
        med = common.median(ts)
        speedup = common.paired_ratio(times[kind, 1], ts)
        rows.append([f"{kind} pool", str(n), f"{med * 1e3:.0f} ms",
                     f"{tasks / med:.1f}", common.fmt_ratio(speedup)])
        results.append({"kind": kind, "workers": n, "batch_s": ts,
                        "median_s": med, "tasks_per_s": tasks / med,
                        "speedup_vs_1": speedup})
    scripts.print_table(["pool", "workers", "batch (median)", "tasks/s",
                         "speed-up vs 1 worker"], rows)
    print()
    if "tpshare" in kinds and "process" in kinds:
        for n in counts:
            # Throughput ratio: process batch time / tpshare batch time.
            ratio = common.paired_ratio(times["process", n],
                                        times["tpshare", n])
            verdict = ""
            if n == 2:
                verdict = " (target >= 0.9: " + (
                    "met)" if ratio >= 0.9 else "NOT met)")
            print(f"tpshare/process throughput, {n} worker(s): "
                  f"{ratio:.2f}{verdict}")
            results.append({"ratio_tpshare_over_process": ratio,
                            "workers": n})
    if args.json:
        scripts.write_json(args.json, "bench_pool",
                           {"tasks": tasks, "size": args.size,
                            "repeat": repeat, "workers": counts,
                            "kinds": kinds}, results)


if __name__ == "__main__":
    main()
