"""The sanitizer runs themselves: what tools/sanitizer_logs.py counts as
tpshare's, and a ThreadSanitizer build that really reports a race."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from support import SANITIZER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "sanitizer_logs", os.path.join(ROOT, "tools", "sanitizer_logs.py"))
sanitizer_logs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sanitizer_logs)

CPYTHON_LEAK = """\
Direct leak of 64 byte(s) in 1 object(s) allocated from:
    #0 0x7f in __interceptor_malloc asan_malloc_linux.cpp:69
    #1 0x7f in PyUnicode_New Objects/unicodeobject.c:1329
"""
TPSHARE_LEAK = """\
Direct leak of 4096 byte(s) in 1 object(s) allocated from:
    #0 0x7f in __interceptor_malloc asan_malloc_linux.cpp:69
    #1 0x7f in ptrmap_grow src/ptrmap.h:80
    #2 0x7f in tps_share src/record.c:700
    #3 0x7f in _PyEval_EvalFrameDefault Python/ceval.c:100
"""
UNSYMBOLIZED_LEAK = """\
Direct leak of 96 byte(s) in 1 object(s) allocated from:
    #0 0x7f in __interceptor_malloc asan_malloc_linux.cpp:69
    #1 0x7f  (/venv/lib/tpshare/_tpshare.cpython-313-x86_64-linux-gnu.so+0x1d2)
"""


def write_log(tmp_path, name, text):
    (tmp_path / name).write_text(text)


def run_scanner(tmp_path):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "sanitizer_logs.py"),
         str(tmp_path)], capture_output=True, text=True, timeout=60)


def test_cpython_leaks_are_counted_not_failed(tmp_path):
    write_log(tmp_path, "asan.1",
              "==1==ERROR: LeakSanitizer: detected memory leaks\n\n"
              + CPYTHON_LEAK + "\n" + CPYTHON_LEAK)
    proc = run_scanner(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0 report(s) of tpshare's, 2 leak(s)" in proc.stdout


@pytest.mark.parametrize("leak", [TPSHARE_LEAK, UNSYMBOLIZED_LEAK])
def test_a_leak_with_a_tpshare_frame_fails(tmp_path, leak):
    write_log(tmp_path, "asan.2",
              "==2==ERROR: LeakSanitizer: detected memory leaks\n\n"
              + CPYTHON_LEAK + "\n" + leak)
    proc = run_scanner(tmp_path)
    assert proc.returncode == 1
    assert "1 report(s) of tpshare's, 1 leak(s)" in proc.stdout
    assert leak.splitlines()[0] in proc.stderr
    assert "PyUnicode_New" not in proc.stderr


def test_tpshare_memory_held_by_a_cpython_leak_is_counted_apart(tmp_path):
    held = TPSHARE_LEAK.replace("Direct leak", "Indirect leak")
    write_log(tmp_path, "asan.7",
              "==7==ERROR: LeakSanitizer: detected memory leaks\n\n"
              + CPYTHON_LEAK + "\n" + held)
    proc = run_scanner(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 indirect leak(s) held by CPython's" in proc.stdout


def test_any_address_error_fails(tmp_path):
    write_log(tmp_path, "asan.3",
              "==3==ERROR: AddressSanitizer: heap-use-after-free\n"
              "    #0 0x7f in PyObject_Free Objects/obmalloc.c:1\n")
    proc = run_scanner(tmp_path)
    assert proc.returncode == 1
    assert "heap-use-after-free" in proc.stderr


def test_a_crashed_leak_checker_fails(tmp_path):
    write_log(tmp_path, "asan.4",
              "==4==LeakSanitizer has encountered a fatal error.\n")
    assert run_scanner(tmp_path).returncode == 1


def test_races_are_judged_by_their_frames(tmp_path):
    race = ("==================\n"
            "WARNING: ThreadSanitizer: data race (pid=5)\n"
            "  Write of size 8 at 0x7b by thread T1:\n"
            "    #0 0x7f in %s\n\n"
            "  Previous read of size 8 at 0x7b by thread T2:\n"
            "    #0 0x7f in take_gil Python/ceval_gil.c:300\n\n"
            "SUMMARY: ThreadSanitizer: data race\n"
            "==================\n")
    write_log(tmp_path, "tsan.5", race % "drop_gil Python/ceval_gil.c:200")
    proc = run_scanner(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 race report(s)" in proc.stdout
    write_log(tmp_path, "tsan.6", race % "tps_channel_send src/chancore.c:50")
    proc = run_scanner(tmp_path)
    assert proc.returncode == 1
    assert "tps_channel_send" in proc.stderr


@pytest.mark.skipif(SANITIZER != "thread",
                    reason="needs the ThreadSanitizer build "
                           "(TPSHARE_SANITIZE=thread bash tests/run.sh)")
def test_thread_sanitizer_reports_a_deliberate_race(tmp_path):
    env = dict(os.environ)
    env["TSAN_OPTIONS"] = (env.get("TSAN_OPTIONS", "")
                           + ":log_path=%s" % (tmp_path / "probe"))
    code = textwrap.dedent("""
        import tpshare_racy_probe
        print(tpshare_racy_probe.race(200_000))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 0 < int(proc.stdout) <= 400_000
    logs = "".join(p.read_text() for p in tmp_path.glob("probe*"))
    assert "WARNING: ThreadSanitizer: data race" in logs
    assert "racy_probe.c" in logs or "bump" in logs
