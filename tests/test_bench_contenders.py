"""The third-party contenders of python -m tpshare.bench: bocpy's
send/receive and the interpreters-pep-734 backport's Queue.  Where their
package imports they are timed side by side with the Channel (a tiny
--quick run gives rows of real figures, received as the right type);
where it does not they are listed and reported as skipped with a
one-line reason, never a crash.  Nothing here asserts on speed."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from support import run_bench

from tpshare.bench import cli, contenders

THIRD_PARTY = ("bocpy", "backport-queue")


def importable(contender_name):
    return contenders.BY_NAME[contender_name].unavailable() is None




def test_they_take_part_in_throughput_and_latency():
    for name in THIRD_PARTY:
        assert name in contenders.THROUGHPUT
        assert name in contenders.LATENCY
        c = contenders.BY_NAME[name]
        assert not c.ours and c.where == "interp"
        assert set(c.kinds) == {"bytes", "str", "int"}
    # The backport's blocking calls sleep 10 ms: the label says so, and
    # the ping-pong gives it the polling contenders' few round trips.
    assert "10 ms" in contenders.BY_NAME["backport-queue"].label
    assert "10 ms" in contenders.BY_NAME["backport-queue"].note


def test_list_says_whether_each_is_available():
    text = cli.list_text()
    # The table may be split in parts to fit the terminal (a long reason
    # on 3.12): each part starts with the contender's name.
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 1 and cells[0] in contenders.BY_NAME:
            rows.setdefault(cells[0], []).extend(cells[1:])
    for name in THIRD_PARTY:
        why = contenders.BY_NAME[name].unavailable()
        side, available, used = rows[name]
        assert side == "baseline" and used == "throughput,latency"
        if why is None:
            assert available == "yes"
        else:
            assert available.startswith("no: ") and "\n" not in why
    assert all(len(line) <= 120 for line in text.splitlines())


def test_the_backport_is_found_by_its_import_name():
    # The package is interpreters-pep-734; its queues module is imported
    # as interpreters_backport.interpreters.queues.
    c = contenders.BY_NAME["backport-queue"]
    assert c.needs == ("interpreters_backport.interpreters.queues",)
    if sys.version_info < (3, 13):
        # It needs _interpqueues, which 3.12 lacks: skipped with a reason.
        assert "not available on Python 3.12" in c.unavailable()


def test_missing_packages_are_skipped_with_one_line(tmp_path):
    # As on a Python where neither package installs.
    prelude = ("for m in ('bocpy', 'interpreters_backport'): "
               "sys.modules[m] = None")
    proc = run_bench(["throughput", "latency", "--quick", "--sizes", "64",
                      "--contenders", "channel", *THIRD_PARTY,
                      "--repeat", "1", "--no-plots", "--out", str(tmp_path)],
                     tmp_path, prelude=prelude)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["errors"] == {}
    for exp in ("throughput", "latency"):
        res = doc["experiments"][exp]
        assert set(res["skipped"]) == set(THIRD_PARTY)
        assert res["contenders"] == ["channel"]
        assert res["errors"] == {}
    lines = proc.stdout.splitlines()
    assert "skipped bocpy: bocpy not available on Python " \
        f"{sys.version.split()[0]}" in lines
    assert any(x.startswith("skipped backport-queue: interpreters_backport."
                            "interpreters.queues not available")
               for x in lines)


@pytest.mark.skipif(not any(importable(n) for n in THIRD_PARTY),
                    reason="neither bocpy nor the backport imports here")
def test_quick_run_gives_rows(tmp_path):
    here = [n for n in THIRD_PARTY if importable(n)]
    proc = run_bench(["throughput", "latency", "--quick", "--sizes", "64",
                      "--contenders", "channel", *THIRD_PARTY,
                      "--repeat", "1", "--no-plots", "--out", str(tmp_path)],
                     tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    thr = doc["experiments"]["throughput"]
    lat = doc["experiments"]["latency"]
    assert thr["errors"] == {} and lat["errors"] == {}
    assert set(thr["skipped"]) == set(THIRD_PARTY) - set(here)
    for name in here:
        assert name in thr["contenders"] and name in lat["contenders"]
        for key, kind in (("int/8", "int"), ("bytes/64", "bytes"),
                          ("str/64", "str")):
            rec = thr["points"][key][name]
            assert rec["received_as"] == kind
            assert rec["median_msgs_per_s"] > 0
            assert rec["n"] >= 1 and len(rec["seconds"]) == 1
        st = lat["stats"][name]
        assert st["n"] >= 1 and st["median_ns"] > 0
    if "backport-queue" in here:
        # The polling backport makes the few round trips of the polling
        # contenders (10 in a quick run), not the thousand of the others.
        assert lat["stats"]["backport-queue"]["n"] == 10
        assert lat["stats"]["channel"]["n"] == 1000
    labels = [contenders.BY_NAME[n].label for n in here]
    for label in labels:
        assert label in proc.stdout
    assert [x for x in proc.stdout.splitlines()
            if len(x) > 120 and not x.startswith("  " + str(tmp_path))] == []


def test_bocpy_endpoints_carry_objects_both_ways():
    if not importable("bocpy"):
        pytest.skip("bocpy does not import here")
    from tpshare.bench import _remote
    import bocpy
    out, back = contenders.BOCPY_TAGS
    bocpy.drain([out, back])
    near = _remote.endpoint(("bocpy", out, back))
    far = _remote.endpoint(("bocpy", back, out))
    near.send_n([b"ab", "cd", 2 ** 40], 3)
    assert [far.recv() for _ in range(3)] == [b"ab", "cd", 2 ** 40]
    far.send(b"pong")
    assert near.recv() == b"pong"


def test_backport_endpoints_carry_objects_both_ways():
    if not importable("backport-queue"):
        pytest.skip("the interpreters-pep-734 backport does not import here")
    from tpshare.bench import _remote
    queues = _remote.backport_queues()
    a, b = queues.create(4), queues.create(4)
    near = _remote.endpoint(("backport-queue", a.id, b.id))
    far = _remote.endpoint(("backport-queue", b.id, a.id))
    near.send_n([b"ab", "cd", 2 ** 40], 3)
    assert [far.recv() for _ in range(3)] == [b"ab", "cd", 2 ** 40]
    far.send(b"pong")
    assert near.recv() == b"pong"


def test_copy_sweep_script_places_the_modes(tmp_path):
    # bench/bench_copy_sweep.py: a tiny run (one size per octave, one
    # round, short trials) times the handler in every mode (auto, forced
    # copy, forced share: it checks each gives the mode asked for) at
    # every size, writes the crossovers it found (or None), and leaves
    # the handlers' threshold as it was.
    script = os.path.join(os.path.dirname(__file__), os.pardir, "bench",
                          "bench_copy_sweep.py")
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--repeat", "1", "--seconds",
         "0.002", "--per-octave", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    sizes = [16 << i for i in range(13)]          # 16 B .. 64 KiB
    by_kind = {"bytes": [], "str": []}
    for r in doc["results"]:
        by_kind[r["kind"]].append(r)
    for kind in ("bytes", "str"):
        assert [r["size"] for r in by_kind[kind]] == sizes
        for r in by_kind[kind]:
            assert set(r["median_msgs_per_s"]) == {"auto", "copy", "share"}
            assert all(v > 0 for v in r["median_msgs_per_s"].values())
            assert r["share_vs_copy"] > 0
        cross = doc["params"][f"crossover_{kind}"]
        assert cross is None or cross in sizes
        assert f"{kind}, the handler's share against its copy" in proc.stdout
    from tpshare import _tpshare
    assert doc["params"]["threshold"] == _tpshare._bytes_threshold()


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="3.12 has no CPython queue to break")
def test_the_backport_leaves_cpythons_queues_shareable(tmp_path):
    # Importing the backport's queues registers its classes with
    # _interpqueues in place of CPython's own: CPython's Queue objects
    # then no longer crossed interpreters (its pep734 experiment, and any
    # test run after, failed).  Checked in a child process, both after the
    # availability check and after a session whose far side imports the
    # backport in its own interpreter.
    if not importable("backport-queue"):
        pytest.skip("the interpreters-pep-734 backport does not import here")
    code = textwrap.dedent("""\
        import test.support.interpreters as interpreters
        from test.support.interpreters import queues
        from tpshare.bench import contenders
        q = queues.create(2)
        c = contenders.BY_NAME["backport-queue"]
        assert c.unavailable() is None
        print(interpreters.is_shareable(q))
        s = contenders.Session(c, 4, "auto")
        try:
            print(s.probe(b"12345678"))
        finally:
            s.close()
        print(interpreters.is_shareable(q))
        interp = interpreters.create()
        # (3.13 rebuilds a queue only where its module was imported)
        interp.exec("import test.support.interpreters.queues")
        interp.prepare_main(q=q)
        q.put(42)
        interp.exec("q.put(q.get() + 1)")
        print(q.get())
        interp.close()
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:4] == [
        "True", "('bytes', 8)", "True", "43"]
