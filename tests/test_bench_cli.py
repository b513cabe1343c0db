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
import textwrap

import pytest

from tpshare.bench import EXPERIMENTS, cli, common, contenders

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def run_bench(args, tmp_path, prelude="", timeout=180):
    """python -m tpshare.bench args in a child process (prelude runs
    first, in the child); CompletedProcess."""
    code = textwrap.dedent(f"""\
        import sys
        {prelude}
        from tpshare.bench.cli import main
        sys.exit(main({list(args)!r}))
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


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
    assert res["points"]["bytes/4096"]["channel"]["received_as"] == "bytes"
    assert "memchannel" not in res["points"]["str/64"]   # buffers only
    # Batches: every kind up to 4 KiB, nothing above.
    for key in ("int/8", "bytes/64", "str/64", "bytes/4096"):
        assert res["points"][key]["channel-batch"]["median_msgs_per_s"] > 0
    assert "channel-batch" not in res["points"]["bytes/65536"]
    assert "channel" in res["points"]["bytes/65536"]
    # The table shows the baseline beside ours, with the ratios.
    assert "Channel throughput / baseline's" in proc.stdout
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


def test_line_round_trip_gauge():
    from tpshare import _tpshare
    ns = _tpshare._line_round_trip(1000)
    if len(os.sched_getaffinity(0)) < 2:
        assert ns is None
    else:
        assert 1 < ns < 1e6
    for bad in (0, -1, 10**9):
        with pytest.raises(ValueError):
            _tpshare._line_round_trip(bad)
    with pytest.raises(TypeError):
        _tpshare._line_round_trip("1")


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
    assert set(wake) == {"floor", "channel", "threads"}
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
    assert "median/p99 of each round" in proc.stdout
    assert "Parked wake-up" in proc.stdout
    assert "machine floor" in proc.stdout
