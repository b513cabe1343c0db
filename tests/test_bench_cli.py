"""The comparison experiments' command line (python -m tpshare.bench):
a --quick run of one small experiment writes the JSON, the summary and
a PNG; unknown experiment names, sizes and contenders are usage errors
that list the valid ones; a baseline missing from this Python is
reported as skipped.  Nothing here asserts on speed."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from support import Sub, run_bench

from tpshare.bench import EXPERIMENTS, cli, common, contenders

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None




@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench(["throughput", "--quick", "--sizes", "64", "4K", "64K",
                      "--contenders", "channel", "channel-batch",
                      "memchannel", "threads", "--out", str(out)], out)
    return proc, out


def test_quick_run_writes_results(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "results.json", encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["quick"] is True
    assert doc["machine"]["python"].startswith(
        "%d.%d" % sys.version_info[:2])
    res = doc["experiments"]["throughput"]
    assert res["errors"] == {}
    for name in ("channel", "memchannel", "threads"):
        rec = res["points"]["bytes/64"][name]
        assert rec["median_msgs_per_s"] > 0
        assert len(rec["seconds"]) == 1       # --quick: one round
    assert res["points"]["bytes/64"]["memchannel"]["received_as"] == \
        "memoryview"
    # A zero-copy send moves no bytes: no bytes/s for it, only for copies.
    mem = res["points"]["bytes/65536"]["memchannel"]
    assert mem["zero_copy"] is True and mem["median_bytes_per_s"] is None
    chan = res["points"]["bytes/65536"]["channel"]
    assert chan["zero_copy"] is False
    assert chan["median_bytes_per_s"] == chan["median_msgs_per_s"] * 65536
    # Every line fits a 120-column terminal (but the files written, whose
    # paths are the caller's).
    assert [x for x in proc.stdout.splitlines()
            if len(x) > 120 and not x.startswith("  " + str(out))] == []
    assert res["points"]["bytes/4096"]["channel"]["received_as"] == "bytes"
    assert "memchannel" not in res["points"]["str/64"]   # buffers only
    # Batches: every kind up to 4 KiB, nothing above.
    for key in ("int/8", "bytes/64", "str/64", "bytes/4096"):
        assert res["points"][key]["channel-batch"]["median_msgs_per_s"] > 0
    assert "channel-batch" not in res["points"]["bytes/65536"]
    assert "channel" in res["points"]["bytes/65536"]
    # The table shows the baseline beside ours, with the ratios.
    assert "Channel throughput / each other contender's" in proc.stdout
    assert "queue.Queue threads" in proc.stdout
    assert (out / "summary.txt").read_text().startswith(
        "tpshare comparison experiments")
    # Every trial has the core-to-core gauge from just before and after.
    rec = res["points"]["bytes/64"]["channel"]
    assert len(rec["gauge_ns"]) == len(rec["seconds"]) == 1
    assert all(g > 0 for g in rec["gauge_ns"][0])
    assert "Throughput by the machine's mode" in proc.stdout
    # The MemChannel sweep: every size timed in every round, with the
    # core-to-core gauge measured before each round.
    sw = res["sweep"]
    assert sw["contender"] == "memchannel" and sw["sizes"] == [64, 4096, 65536]
    assert sw["rounds"] == 3                      # --quick: 2 x 1 + 1
    for size in ("64", "4096", "65536"):
        assert len(sw["msgs_per_s"][size]) == 3
        assert sw["median_msgs_per_s"][size] > 0
        assert sw["relative"][size] > 0
    assert sw["worst_deviation"] == max(abs(v - 1)
                                        for v in sw["relative"].values())
    assert len(sw["line_round_trip_ns"]) == 3
    assert all(g > 0 for g in sw["line_round_trip_ns"])
    assert "MemChannel across sizes" in proc.stdout
    assert doc["machine"]["line_round_trip_ns"] > 0
    assert "core-to-core gauge" in proc.stdout


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed")
def test_quick_run_draws_png(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "throughput.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(HAVE_MPL, reason="matplotlib is installed")
def test_quick_run_without_matplotlib_says_so(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no plots" in proc.stdout
    assert not list(out.glob("*.png"))


def usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_unknown_experiment_lists_valid_ones(capsys):
    err = usage_error(["throughput", "nonsense"], capsys)
    assert "invalid choice: 'nonsense'" in err
    for name in EXPERIMENTS:
        assert repr(name) in err


def test_unknown_size_lists_valid_ones(capsys):
    err = usage_error(["--sizes", "64", "3K"], capsys)
    assert "invalid choice: '3K'" in err
    for name in common.SIZE_NAMES:
        assert repr(name) in err


def test_unknown_contender_lists_valid_ones(capsys):
    err = usage_error(["--contenders", "zeromq"], capsys)
    assert "invalid choice: 'zeromq'" in err
    for name in contenders.NAMES:
        assert repr(name) in err


def test_bad_repeat_is_a_usage_error(capsys):
    assert "--repeat" in usage_error(["--repeat", "0"], capsys)


@pytest.mark.parametrize("text,name", [
    ("64", "64"), ("64B", "64"), ("1k", "1K"), ("1KiB", "1K"),
    ("1024", "1K"), ("256MiB", "256M"), ("4m", "4M"),
])
def test_size_spellings(text, name):
    args = cli.build_parser().parse_args(["--sizes", text])
    assert args.sizes == [name]


def test_default_runs_every_experiment():
    args = cli.build_parser().parse_args([])
    assert not args.experiments       # main() then runs all of them


def test_missing_baseline_is_skipped_not_crashed(tmp_path):
    # Hide CPython's queue and channel modules, as on a Python without
    # them (3.12 has no _interpqueues).
    prelude = ("for m in ('_interpqueues', '_interpchannels', "
               "'_xxinterpchannels'): sys.modules[m] = None")
    proc = run_bench(["throughput", "latency", "--quick", "--sizes", "64",
                      "--contenders", "channel", "cpython-queue",
                      "cpython-queue-poll", "cpython-channel",
                      "--repeat", "1", "--no-plots", "--out", str(tmp_path)],
                     tmp_path, prelude=prelude)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    thr = doc["experiments"]["throughput"]
    assert set(thr["skipped"]) == {"cpython-queue", "cpython-channel"}
    assert "not available" in thr["skipped"]["cpython-queue"]
    assert thr["contenders"] == ["channel"]
    assert set(doc["experiments"]["latency"]["skipped"]) == {
        "cpython-queue", "cpython-queue-poll", "cpython-channel"}
    assert "skipped cpython-queue: _interpqueues not available" in \
        proc.stdout
    assert doc["errors"] == {}


def test_list_shows_availability():
    proc = subprocess.run([sys.executable, "-m", "tpshare.bench", "--list"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in contenders.NAMES:
        assert name in proc.stdout
    if sys.version_info < (3, 13):
        assert "_interpqueues not available" in proc.stdout


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed")
def test_replot(quick_run, tmp_path):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = tmp_path / "results.json"
    copy.write_text((out / "results.json").read_text())
    again = subprocess.run(
        [sys.executable, "-m", "tpshare.bench", "--replot", str(copy)],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert os.path.exists(tmp_path / "throughput.png")


def test_production_module_carries_no_probes_or_tunables():
    """The probes live in the benchmarks' own extension, and the
    production module has no setting a benchmark could change."""
    from tpshare import _tpshare
    from tpshare.bench import _probes
    for name in ("_wake_floor", "_line_round_trip"):
        assert not hasattr(_tpshare, name)
        assert callable(getattr(_probes, name))
    threshold = _tpshare._bytes_threshold()
    with pytest.raises(TypeError):
        _tpshare._bytes_threshold(threshold + 1)
    assert _tpshare._bytes_threshold() == threshold


def test_line_round_trip_gauge():
    from tpshare.bench import _probes
    ns = _probes._line_round_trip(1000)
    if len(os.sched_getaffinity(0)) < 2:
        assert ns is None
    else:
        assert 1 < ns < 1e6
    for bad in (0, -1, 10**9):
        with pytest.raises(ValueError):
            _probes._line_round_trip(bad)
    with pytest.raises(TypeError):
        _probes._line_round_trip("1")


def test_the_machine_mode_of_a_trial():
    assert common.mode_of([70, 150]) == "near"
    assert common.mode_of([200, 450]) == "far"
    assert common.mode_of([90, 500]) is None       # switched meanwhile
    assert common.mode_of([None, 80]) is None
    assert common.mode_of([]) is None


def test_trials_are_sorted_by_the_machine_mode():
    from tpshare.bench import throughput
    rec = {"n": 100, "seconds": [1.0, 2.0, 4.0, 5.0, 10.0],
           "gauge_ns": [[70, 80], [400, 450], [90, 500], [60, 65],
                        [None, None]]}
    near, far = throughput.by_mode(rec)
    assert near == [100.0, 20.0]          # both gauges below 200 ns
    assert far == [50.0]                  # both above
    # A trial that straddles a switch, or has no gauge, is in neither.
    assert throughput.by_mode({"n": 1, "seconds": [1.0]}) == ([], [])


def test_sweep_is_left_out_without_memchannel(tmp_path):
    proc = run_bench(["throughput", "--quick", "--sizes", "64",
                      "--contenders", "channel", "--out", str(tmp_path),
                      "--no-plots"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        res = json.load(f)["experiments"]["throughput"]
    assert res["sweep"] is None
    assert "across sizes" not in proc.stdout


def test_latency_reports_parked_wake_ups_beside_the_floor(tmp_path):
    proc = run_bench(["latency", "--quick", "--contenders", "channel",
                      "threads", "--out", str(tmp_path), "--no-plots"],
                     tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        res = json.load(f)["experiments"]["latency"]
    wake = res["wake"]
    assert set(wake) == {"floor", "pyfloor", "channel", "threads"}
    for name, x in wake.items():
        assert x["n"] == 100                       # --quick
        assert 0 < x["min_ns"] <= x["median_ns"] <= x["p99_ns"] <= x["max_ns"]
    assert res["wake_pause_s"] == 0.001
    for name in ("channel", "threads"):
        x = res["stats"][name]
        assert len(x["round_p99_ns"]) == len(x["round_medians_ns"]) == 1
        assert x["round_p99_ns"][0] >= x["round_medians_ns"][0] > 0
        assert len(x["round_gauge_ns"]) == 1
        assert all(g > 0 for g in x["round_gauge_ns"][0])
    assert "Median / p99 of each round" in proc.stdout
    assert "Parked wake-up" in proc.stdout
    assert "machine floor" in proc.stdout
    assert "Python-level floor" in proc.stdout


def test_sem_probe_wakes_python_in_another_interpreter():
    """The Python-level floor's semaphores: a stamp posted here is what a
    waiter in an isolated interpreter gets back (it echoes it on a second
    semaphore); slots are checked."""
    from tpshare.bench import _probes
    there, back = _probes._sem_new(), _probes._sem_new()
    try:
        assert there != back
        with pytest.raises(TimeoutError):
            _probes._sem_wait(there, 0.01)
        with Sub() as sub:
            sub.run(f"""
                import threading
                from tpshare.bench import _probes
                def echo():
                    for _ in range(3):
                        _probes._sem_post({back},
                                          _probes._sem_wait({there}, 60.0))
                t = threading.Thread(target=echo)
                t.start()
            """)
            for stamp in (5, -7, 2**62):
                _probes._sem_post(there, stamp)
                assert _probes._sem_wait(back, 60.0) == stamp
            sub.run("t.join(60)")
            assert sub.eval("t.is_alive()") == "False"
    finally:
        _probes._sem_free(there)
        _probes._sem_free(back)
    for bad in (there, -1, 8, "0"):
        with pytest.raises((ValueError, TypeError)):
            _probes._sem_post(bad, 0)
    with pytest.raises(ValueError):
        _probes._sem_free(back)
    slot = _probes._sem_new()
    try:
        with pytest.raises(ValueError):
            _probes._sem_wait(slot, -1.0)
        with pytest.raises(TypeError):
            _probes._sem_post(slot)
    finally:
        _probes._sem_free(slot)


# ---------------------------------------------------------------------------
# The report as users read it, rendered from a synthetic results document
# with every contender at every size (no measuring).

def _rec(rate, size, zero_copy, rounds=5):
    rates = [rate * f for f in (0.9, 1.0, 1.1, 0.95, 1.05)[:rounds]]
    n = 1000
    return {"n": n, "received_as": "bytes", "capacity": 1000,
            "seconds": [n / r for r in rates],
            "gauge_ns": [[70.0, 80.0], [400.0, 450.0], [90.0, 500.0],
                         [60.0, 65.0], [350.0, 390.0]][:rounds],
            "msgs_per_s": rates,
            "median_msgs_per_s": rate,
            "median_bytes_per_s": None if zero_copy or size is None
            else rate * size,
            "zero_copy": zero_copy}


def _lat_stats(median_ns, rounds=5):
    xs = [median_ns * f for f in (0.5, 1, 1.5, 20, 300, 1000)]
    return {"n": 20000, "min_ns": xs[0], "median_ns": xs[1],
            "p90_ns": xs[2], "p99_ns": xs[3], "p999_ns": xs[4],
            "max_ns": xs[5], "mean_ns": xs[2],
            "round_medians_ns": [median_ns * 1.01] * rounds,
            "round_p99_ns": [median_ns * 21.3] * rounds,
            "round_gauge_ns": [[70.0, 80.0], [400.0, 450.0], [90.0, 500.0],
                               [None, None], [60.0, 65.0]][:rounds],
            "quantiles_ns": [median_ns * (0.5 + i / 100) for i in range(101)]}


def synthetic_doc(parallel=True, workers=8):
    """A results document as a full run on a big machine would write it:
    every contender, every size and kind, extreme rates and ratios, long
    machine strings, skipped contenders and errors."""
    from tpshare.bench import latency, memory, release, scaling, throughput
    sizes = list(common.SIZES.values())
    str_sizes = [s for s in sizes if s <= 64 << 10]
    points = {}
    for kind, size in throughput.points(sizes, str_sizes):
        row = points.setdefault(f"{kind}/{size}", {})
        for name in contenders.THROUGHPUT:
            c = contenders.BY_NAME[name]
            if kind not in c.kinds or (c.max_size is not None
                                       and size > c.max_size):
                continue
            # Zero-copy rates do not fall with the size; copies do, down
            # to a fraction of a message per second at 256 MiB.
            rate = (1.87e6 if c.zero_copy
                    else 12.3e6 / (1 + size / 2048) / (3 if c.ours else 1))
            row[name] = _rec(rate, None if kind == "int" else size,
                             c.zero_copy)
    sweep_sizes = [str(s) for s in sizes]
    thr = {
        "method": "...", "contenders": list(contenders.THROUGHPUT),
        "skipped": {"cpython-channel": "_interpchannels / _xxinterpchannels "
                    "not available on Python 3.12.1 " + "(why) " * 30},
        "errors": {"mp-shm": "bytes 268435456: " + "far side failed " * 20},
        "sizes": sizes, "str_sizes": str_sizes, "int_value": 1,
        "repeat": 5, "trial_seconds": 0.2, "points": points,
        "sweep": {"contender": "memchannel", "sizes": sizes, "rounds": 11,
                  "n": {s: 1000 for s in sweep_sizes},
                  "msgs_per_s": {s: [1.7e6 + i * 1e5 for i in range(11)]
                                 for s in sweep_sizes},
                  "median_msgs_per_s": {s: 1.9e6 for s in sweep_sizes},
                  "relative": {s: 1.0 - 0.08 * (i % 2)
                               for i, s in enumerate(sweep_sizes)},
                  "worst_deviation": 0.08,
                  "line_round_trip_ns": [66.5 + 50 * i for i in range(11)]},
        "duration_s": 412.3,
    }
    lat = {
        "method": "...", "contenders": list(contenders.LATENCY),
        "skipped": {}, "errors": {},
        "stats": {n: _lat_stats(1310.0 * (i + 1) ** 2)
                  for i, n in enumerate(contenders.LATENCY)},
        "wake_pause_s": 0.001,
        "wake": {n: _lat_stats(33000.0) for n in ("floor",) + latency.WAKE},
        "duration_s": 63.0,
    }
    rel = {"method": "...", "modes": list(release.MODES),
           "stats": {m: _lat_stats(570.0) for m in release.MODES},
           "skipped": {}, "errors": {}, "duration_s": 9.1}
    ks = list(range(1, workers + 1))
    results = {}
    for kind in scaling.KINDS:
        t1 = 0.424
        rows = {}
        for k in ks:
            if kind == "threads" or not parallel:
                tk = t1 * k * 1.04
            else:
                tk = t1 * (1.1 if k > 1 else 1)
            rows[str(k)] = {"seconds": [tk] * 5, "median_s": tk,
                            "speedup": k * t1 / tk, "efficiency": t1 / tk,
                            "worker_seconds": [tk] * 5,
                            "worker_efficiency": 0.97}
        results[kind] = rows
    scl = {"method": "...", "runner": "tpshare.Interpreter (own GIL, own "
           "thread)", "work_iterations": 1_860_000,
           "work_seconds_target": 0.5, "workers": ks,
           "kinds": list(scaling.KINDS), "results": results,
           "skipped": {}, "errors": {}, "duration_s": 44.0}
    mem_points = {}
    for kind, size in memory.payloads(False):
        for name in memory.CONTENDERS:
            if kind in contenders.BY_NAME[name].kinds:
                per = 146 + (size if name == "cpython-queue-pickle" else 0)
                mem_points.setdefault(f"{kind}/{size}", {})[name] = {
                    "n": 100_000, "rss_before": 1 << 24,
                    "rss_after": (1 << 24) + per * 100_000,
                    "bytes_per_message": float(per)}
    mem = {"method": "...", "contenders": list(memory.CONTENDERS),
           "payloads": [f"{k}/{s}" for k, s in memory.payloads(False)],
           "points": mem_points,
           "retained": {n: {"n": 2048, "size": 65536, "rss_before": 0,
                            "rss_after": 104857, "bytes_per_message": 51.2}
                        for n in memory.RETAINED},
           "skipped": {}, "errors": {}, "duration_s": 70.2}
    config = " ".join(f"'--with-option-number-{i}=/a/long/path/{i}'"
                      for i in range(12))
    machine = {
        "date": "2026-11-26T00:44:05+00:00",
        "python": "3.13.0 (main, May  9 2026, 07:36:57) [GCC 12.2.0]",
        "executable": "/a/rather/long/path/to/a/virtual/environment/bin/"
                      "python3",
        "cflags": "-fno-strict-overflow -Wsign-compare -DNDEBUG -g -O3 "
                  "-Wall " * 4,
        "config_args": config, "tpshare": "0.1.0.dev0",
        "tpshare_path": "/a/rather/long/path/to/a/virtual/environment/lib/"
                        "python3.13/site-packages/tpshare",
        "platform": "Linux-6.18.44-x86_64-with-glibc2.36",
        "cpu": "AMD EPYC 9R14 96-Core Processor", "cores": 192,
        "affinity": list(range(192)), "memory_bytes": 24 << 30,
        "loadavg": [0.4248046875, 0.701171875, 0.93212890625],
        "empty_loop_ns": 11.93, "line_round_trip_ns": 67.4,
        "malloc": "malloc: glibc mmap threshold 32 MiB, trim threshold "
                  "64 MiB (their largest dynamic values; --malloc-defaults "
                  "to keep glibc's start-up values)",
    }
    doc = {"format": cli.FORMAT_VERSION, "quick": False, "machine": machine,
           "runner": scl["runner"], "settings": {},
           "experiments": {"throughput": thr, "latency": lat,
                           "release": rel, "scaling": scl, "memory": mem},
           "skipped": {"throughput": thr["skipped"]},
           "errors": {"throughput": thr["errors"]},
           "duration_s": 583.2,
           "machine_after": {"empty_loop_ns": 13.7,
                             "line_round_trip_ns": 66.0,
                             "loadavg": [1.0, 1.0, 1.0]}}
    doc["headline"] = cli._headline(doc)
    return doc


def section(text, title):
    """The lines of text from the one starting with title to the next
    blank line."""
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]),
               len(lines))
    return lines[start:end]


@pytest.mark.parametrize("parallel", [True, False])
def test_report_fits_120_columns(parallel):
    doc = synthetic_doc(parallel)
    text = cli.render(doc, out="/results/20261126-004357")
    long = [x for x in text.splitlines() if len(x) > 120]
    assert long == []
    # Every contender and every size is there all the same.
    for name in contenders.THROUGHPUT + contenders.LATENCY:
        assert contenders.BY_NAME[name].label in text
    for size in common.SIZES.values():
        assert common.fmt_size(size) in text
    assert cli.list_text().splitlines()
    assert max(len(x) for x in cli.list_text().splitlines()) <= 120


def test_zero_copy_sends_are_reported_in_messages_per_second():
    text = cli.render(synthetic_doc())
    # 1.87 M zero-copy messages/s of 256 MiB would be "502 TB/s".
    assert "TB/s" not in text
    assert "PB/s" not in text
    copied = section(text, "Bytes copied per second, bytes payloads")
    labels = [line.split(" | ")[0].strip() for line in copied[2:]
              if " | " in line]
    zero = [c.label for c in contenders.ALL if c.zero_copy]
    assert "Channel" in labels and "CPython queue (XID)" in labels
    assert not set(labels) & set(zero)
    # Zero-copy contenders have their rate in messages/s.
    rates = section(text, "Throughput, bytes payloads: messages/s")
    assert any(line.startswith("MemChannel ") and "1.87 M/s" in line
               for line in rates)


def test_scaling_says_when_the_host_gives_no_parallelism():
    text = cli.render(synthetic_doc(parallel=False))
    scl = section(text, "Parallel scaling")
    assert any("no parallelism" in x for x in scl)
    assert not any("x1.0" in x or "vs threads" in x for x in scl)
    assert "scaling: no parallelism on this host" in text
    text = cli.render(synthetic_doc(parallel=True))
    scl = section(text, "Parallel scaling")
    assert not any("no parallelism" in x for x in scl)
    assert any("x7.27" in x for x in scl)          # 8 workers: 8 / 1.1


def test_old_results_without_the_zero_copy_flag_render_alike():
    doc = synthetic_doc()
    for row in doc["experiments"]["throughput"]["points"].values():
        for rec in row.values():
            del rec["zero_copy"]
    assert cli.render(doc) == cli.render(synthetic_doc())


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed")
def test_plots_keep_legends_off_the_data_and_one_colour_each(
        monkeypatch, tmp_path):
    from tpshare.bench import plots
    figs = {}

    def keep(fig, plt, path):
        figs[os.path.basename(path)] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    doc = synthetic_doc()
    plots.draw_all(doc, str(tmp_path))
    colours = {}
    for name, fig in figs.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        for ax in fig.axes:
            assert legend.y1 <= ax.get_tightbbox(renderer).y0, name
        for ax in fig.axes:
            for line in ax.get_lines():
                label = line.get_label()
                if not label.startswith("_"):
                    colours.setdefault(label, set()).add(line.get_color())
    # Each contender one colour in every figure, no two alike.
    lines = figs["throughput.png"].axes[0].get_lines()
    assert len({line.get_color() for line in lines}) == len(lines) >= 12
    for label, seen in colours.items():
        assert len(seen) == 1, label
    assert set(colours["Channel"]) != set(colours["MemChannel"])


def test_main_table_gives_the_channel_against_cpythons_queue_per_size():
    from tpshare.bench import throughput
    doc = synthetic_doc()
    text = cli.render(doc)
    # Every part of the table (it is split to fit 120 columns).
    rates = text.split("Throughput, bytes payloads: messages/s")[1]
    rates = rates.split("Bytes copied per second, bytes")[0].splitlines()
    row = [line for line in rates
           if line.startswith(throughput.MAIN_RATIO_LABEL)]
    assert len(row) >= 2, rates
    points = doc["experiments"]["throughput"]["points"]
    want = [common.fmt_ratio(common.paired_ratio(
                points[k]["channel"]["msgs_per_s"],
                points[k]["cpython-queue"]["msgs_per_s"]))
            for k in points if k.startswith("bytes/")
            and "channel" in points[k] and "cpython-queue" in points[k]]
    cells = [c.strip() for line in row for c in line.split(" | ")[1:]]
    assert cells == want
    assert max(len(x) for x in text.splitlines()) <= 120


class _SlowStartSession:
    """A transport whose every trial pays a fixed start-up (a wake-up)
    besides its cost per item; records the trial lengths asked for."""

    def __init__(self, start_s, per_item_s):
        self.start_s, self.per_item_s, self.asked = start_s, per_item_s, []

    def trial(self, data, n):
        self.asked.append(n)
        return self.start_s + n * self.per_item_s


def test_calibration_does_not_rest_on_one_wake_up():
    """A 64 MiB buffer through a zero-copy transport: 1 ms to start a
    trial, 0.5 us per message.  Calibrated from a single-message trial,
    the trials were ~100 messages, mostly start-up (the rate looked half
    of what it is); the warm-up now grows until a trial lasts an eighth
    of the target, and the trial length it returns makes the start-up a
    small part of a trial."""
    from tpshare.bench import throughput

    class Ctx:
        min_n, max_n = 2, 300_000

    s = _SlowStartSession(1e-3, 0.5e-6)
    n = throughput.calibrate(Ctx, s, [b"x"], 64 << 20, 0.1)
    assert s.asked[0] == 1 and s.asked == sorted(s.asked)
    assert s.trial(None, s.asked[-1]) >= 0.1 / 8
    # The per-message estimate is within 10% of the true 0.5 us.
    assert 0.1 / 0.55e-6 <= n <= 0.1 / 0.5e-6
