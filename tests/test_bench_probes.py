"""Probes of the benchmarks' own extension that the copy sweep and the
16 KiB comparison use: the switch of the bytes and str handlers' share
threshold (tpshare.bench._probes._share_min) and the bare-copy floor
(_copy_floor).  bench/bench_copy_sweep.py itself is run by
test_bench_contenders.py."""
import os
import subprocess
import sys
import textwrap

import pytest


def run_py(code, timeout=120):
    """code in a child process (the switch is process-wide)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_share_min_forces_the_handlers_mode_at_any_size():
    out = run_py("""
        import sys
        import tpshare
        from tpshare import _tpshare
        from tpshare.bench import _probes

        def bound(obj):
            before = sys.getrefcount(obj)
            with tpshare.share(obj) as s:
                held = sys.getrefcount(obj) - before
                assert s.rebuild() == obj
                return s.bound, held

        default = _tpshare._bytes_threshold()
        assert _probes._share_min() == default
        small, big = b"ab" * 10, b"x" * (4 * default)
        text = "\\u20ac" * (default // 2)            # 2 bytes a character
        assert bound(small) == (False, 0) and bound(big) == (True, 1)
        assert bound(text) == (True, 1)
        assert _probes._share_min(0) == default
        assert bound(small) == (True, 1)             # the record holds it
        assert bound(b"zq") == (True, 1)
        assert bound("-".join("s" * 21)) == (True, 1)   # not interned
        assert _probes._share_min(sys.maxsize) == 0
        assert bound(big) == (False, 0)
        assert bound(text) == (False, 0)
        assert _probes._share_min(default) == sys.maxsize
        assert bound(big) == (True, 1) and bound(small) == (False, 0)
        assert _tpshare._bytes_threshold() == default
        try:
            _probes._share_min(-1)
        except ValueError:
            pass
        else:
            raise AssertionError("a negative threshold was taken")
        print("ok")
        """)
    assert out.strip() == "ok"


def test_share_min_reaches_subinterpreters_through_a_channel():
    """The forced mode holds for a payload a subinterpreter receives: the
    sender's bytes is held until the receiver lets the record go."""
    out = run_py("""
        import sys
        import tpshare
        from tpshare import _stdinterp
        from tpshare.bench import _probes

        ch = tpshare.Channel()
        sub = _stdinterp.Subinterpreter()
        sub.run(f"import tpshare; ch = tpshare.Channel.from_id({ch.id})")
        payload = bytes(range(200))   # above the immediate items
        for mode, value in (("copy", sys.maxsize), ("share", 0)):
            _probes._share_min(value)
            before = sys.getrefcount(payload)
            ch.send(payload)
            held = sys.getrefcount(payload) - before
            sub.run("got = ch.recv(); assert got == bytes(range(200)); "
                    "del got")
            tpshare.drain()
            print(mode, held, sys.getrefcount(payload) - before)
        sub.close()
        ch.close()
        """)
    assert out.splitlines() == [
        "copy 0 0", "share 1 0"]


def test_copy_floor_gives_a_time_per_message():
    from tpshare.bench import _probes
    ns = _probes._copy_floor(16 << 10, 2000, 16)
    if len(os.sched_getaffinity(0)) < 2:
        assert ns is None
    else:
        assert 0 < ns < 1e7
    with pytest.raises(ValueError):
        _probes._copy_floor(0, 10, 1)
