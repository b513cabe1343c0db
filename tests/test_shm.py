"""tpshare.shm: MemChannel and Channel between processes over shared
memory.  Every cross-process test uses real processes (multiprocessing
under each start method, or a fresh interpreter by subprocess)."""

import gc
import math
import mmap
import multiprocessing as mp
import os
import pickle
import signal
import struct
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

import shm_peers
import tpshare
from support import Sub, run_child
from tpshare import shm

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture
def mc():
    ch = shm.MemChannel(size=1 << 20)
    yield ch
    ch.close()


def used(ch):
    return ch.stats()["used_bytes"]


# -- one process ---------------------------------------------------------

def test_send_recv_small_and_large(mc):
    t = mc.send(b"hello")
    assert t.released  # a copy: the sender's memory is free at once
    mv = mc.recv(timeout=1)
    assert isinstance(mv, memoryview) and mv.readonly
    assert bytes(mv) == b"hello"
    big = bytes(range(256)) * 40
    mc.send(big)
    mv = mc.recv(timeout=1)
    assert type(mv.obj) is shm.View and mv.readonly
    assert bytes(mv) == big
    assert used(mc) == 10240
    mv.release()
    assert used(mc) == 0
    s = mc.stats()
    assert (s["sent"], s["received"], s["queued"]) == (2, 2, 0)


def test_every_exporter_is_copied_in_order(mc):
    import array
    strided = memoryview(bytes(range(200)))[::3]
    arr = array.array("i", range(50))
    empty = b""
    for obj in (strided, arr, empty, bytearray(b"x" * 500)):
        mc.send(obj)
    assert bytes(mc.recv()) == bytes(strided)
    assert bytes(mc.recv()) == arr.tobytes()
    assert bytes(mc.recv()) == b""
    assert bytes(mc.recv()) == b"x" * 500


def test_writable_opt_in(mc):
    with pytest.raises(BufferError):
        mc.send(b"read-only", writable=True)
    assert mc.qsize() == 0
    mc.send(bytearray(b"a" * 300), writable=True)
    mv = mc.recv()
    assert not mv.readonly
    mv[:3] = b"xyz"
    assert bytes(mv[:4]) == b"xyza"
    mc.send(bytearray(b"small"), writable=True)
    assert not mc.recv().readonly


def test_bad_input_queues_nothing(mc):
    for bad in (object(), "text", 12, None):
        with pytest.raises(TypeError):
            mc.send(bad)
    for timeout in (-1, float("nan")):
        with pytest.raises(ValueError):
            mc.send(b"x", timeout=timeout)
        with pytest.raises(ValueError):
            mc.recv(timeout=timeout)
    with pytest.raises(TypeError):
        mc.send(b"x", bogus=1)
    with pytest.raises(TypeError):
        mc.send_many(5)
    with pytest.raises(TypeError):
        mc.send_many([b"ok", object()])
    with pytest.raises(ValueError):
        mc.recv_many(0)
    with pytest.raises(ValueError):
        mc.buffer(-1)
    with pytest.raises(ValueError):
        mc.send(bytes(mc.size + 1))
    assert mc.qsize() == 0 and used(mc) == 0
    assert mc.stats()["sent"] == 0


@pytest.mark.parametrize("kw", [dict(maxsize=-1), dict(maxsize=1 << 21),
                                dict(size=10), dict(size=1 << 50)])
def test_bad_construction(kw):
    with pytest.raises(ValueError):
        shm.MemChannel(**kw)


def test_bad_names():
    for name in ("", "nope", "tps-1-2-zz", 5, "tps-1-2-" + "0" * 31):
        with pytest.raises((ValueError, TypeError)):
            shm.MemChannel.open(name)
    with pytest.raises(FileNotFoundError):
        shm.MemChannel.open("tps-999999999-3-" + "0" * 32)


def test_from_id_is_open(mc):
    other = shm.MemChannel.from_id(mc.id)
    other.send(b"via id")
    assert bytes(mc.recv(timeout=1)) == b"via id"
    assert repr(other).startswith("<tpshare.shm.MemChannel tps-")


def test_open_checks_kind_and_token(mc):
    with pytest.raises(TypeError):
        shm.Channel.open(mc.name)
    pid, fd, token = mc.name.split("-")[1:]
    wrong = f"tps-{pid}-{fd}-{'0' * 32}"
    with pytest.raises(shm.CorruptSegmentError):
        shm.MemChannel.open(wrong)


def test_mode_and_names():
    a, b = shm.MemChannel(size=8192), shm.MemChannel(size=8192)
    assert os.stat(f"/proc/self/fd/{a.fd}").st_mode & 0o777 == 0o600
    assert a.token != b.token and len(a.token) == 16
    assert a.name != b.name


def test_timeouts_full_and_empty():
    ch = shm.MemChannel(maxsize=2, size=8192)
    assert ch.maxsize == 2 and ch.empty() and not ch.full()
    ch.send(b"1")
    ch.send(b"2")
    assert ch.full() and len(ch) == 2
    with pytest.raises(tpshare.ChannelFull):
        ch.send(b"3", timeout=0)
    with pytest.raises(tpshare.ChannelFull):
        ch.send(b"3", timeout=0.05)
    assert ch.qsize() == 2
    assert [bytes(m) for m in ch.recv_many(5)] == [b"1", b"2"]
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv(timeout=0)
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv(timeout=0.05)
    assert issubclass(tpshare.ChannelEmpty, __import__("queue").Empty)


def test_send_many_all_or_nothing():
    ch = shm.MemChannel(maxsize=3, size=8192)
    ch.send(b"a")
    with pytest.raises(tpshare.ChannelFull):
        ch.send_many([bytes(300), b"b", b"c"], timeout=0.01)
    assert ch.qsize() == 1 and used(ch) == 0
    with pytest.raises(ValueError):
        ch.send_many([b"x"] * 4)
    trackers = ch.send_many([b"b", bytes(300)])
    assert len(trackers) == 2 and all(t.released for t in trackers)
    assert [bytes(m) for m in ch.recv_many(3)] == [b"a", b"b", bytes(300)]
    assert used(ch) == 0


def test_close_semantics(mc):
    mc.send(b"left")
    other = shm.MemChannel.open(mc.name)
    mc.close()
    assert other.closed
    with pytest.raises(tpshare.ChannelClosed):
        other.send(b"x")
    with pytest.raises(tpshare.ChannelClosed):
        mc.buffer(10)
    assert bytes(other.recv(timeout=0)) == b"left"
    with pytest.raises(tpshare.ChannelClosed):
        other.recv(timeout=1)


def test_heap_full_waits_then_fails():
    ch = shm.MemChannel(size=8192)
    mv_hold = []
    ch.send(bytes(ch.size))
    mv_hold.append(ch.recv())
    with pytest.raises(tpshare.ChannelFull):
        ch.send(bytes(1000), timeout=0.05)
    with pytest.raises(tpshare.ChannelFull):
        ch.buffer(1000, timeout=0)
    mv_hold.clear()
    ch.send(bytes(1000), timeout=0)
    assert len(ch.recv()) == 1000


def test_signal_interrupts_a_wait():
    # The signal goes to another thread, so the waiting main thread's
    # system call is not interrupted: only the wait's own check of
    # Python's pending signals can run the handler.
    r = run_child("""
        import signal, threading, time
        from tpshare import shm
        ch = shm.MemChannel(size=8192)
        t = ch.send(ch.buffer(500))
        mv = ch.recv()
        def boom(*args):
            raise InterruptedError("signal")
        def later():
            time.sleep(0.2)
            signal.pthread_kill(threading.get_ident(), signal.SIGALRM)
        signal.signal(signal.SIGALRM, boom)
        for wait in (ch.recv, t.wait):
            threading.Thread(target=later).start()
            try:
                wait()
            except InterruptedError:
                print("interrupted", end=" ")
        print(ch.stats()["received"], t.released)
    """, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["interrupted", "interrupted", "1", "False"]


def test_threads_share_a_handle():
    import threading
    ch = shm.MemChannel(maxsize=64, size=1 << 20)
    got = []

    def producer(k):
        for i in range(500):
            ch.send(b"%d-%d" % (k, i) * (1 + i % 40), timeout=30)

    def consumer():
        while True:
            items = ch.recv_many(16, timeout=30)
            data = [bytes(m) for m in items]
            got.extend(data)
            if b"end" in data:
                return
    threads = [threading.Thread(target=producer, args=(k,))
               for k in range(3)]
    cons = threading.Thread(target=consumer)
    cons.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ch.send(b"end")
    cons.join()
    assert len(got) == 1501
    assert sorted(got[:-1]) == sorted(b"%d-%d" % (k, i) * (1 + i % 40)
                                      for k in range(3) for i in range(500))
    assert used(ch) == 0


# -- segment buffers -----------------------------------------------------

def test_buffer_zero_copy_and_tracker(mc):
    buf = mc.buffer(4096)
    assert len(buf) == 4096 and buf.nbytes == 4096
    w = memoryview(buf)
    w[:5] = b"hello"
    t = mc.send(buf, writable=True)
    assert buf.sent and not t.released
    mv = mc.recv()
    assert bytes(mv[:5]) == b"hello"
    mv[:5] = b"HELLO"
    assert bytes(w[:5]) == b"HELLO"  # the same pages, not a copy
    assert not t.wait(timeout=0.05)
    assert used(mc) == 4096
    mv.release()
    assert t.released and t.wait(0) and used(mc) == 0
    with pytest.raises(BufferError):
        memoryview(buf)
    with pytest.raises(ValueError):
        mc.send(buf)
    w.release()


def test_buffer_dropped_unsent_goes_back(mc):
    bufs = [mc.buffer(1000) for _ in range(10)]
    assert used(mc) == 10 * 1024
    del bufs
    assert used(mc) == 0


def test_buffer_of_another_segment_is_copied(mc):
    other = shm.MemChannel(size=8192)
    buf = other.buffer(500)
    memoryview(buf)[:] = b"q" * 500
    t = mc.send(buf)
    assert t.released and not buf.sent
    assert bytes(mc.recv()) == b"q" * 500


def test_tracker_wait_from_thread(mc):
    import threading
    buf = mc.buffer(300)
    t = mc.send(buf)
    mv = mc.recv()
    threading.Timer(0.05, mv.release).start()
    assert t.wait(timeout=30)


def test_dropping_view_of_many(mc):
    mc.send(bytes(1000))
    mv = mc.recv()
    sub = mv[10:20]
    mv.release()
    assert used(mc) == 1024  # the slice still holds the block
    del sub
    gc.collect()
    assert used(mc) == 0


# -- shm.Channel ---------------------------------------------------------

values_st = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.tuples(children, children) | st.tuples(children),
    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(values_st)
def test_channel_values_round_trip(v):
    ch = _value_channel()
    ch.send(v)
    got = ch.recv(timeout=1)
    assert got == v and type(got) is type(v)


_vc = []


def _value_channel():
    if not _vc:
        _vc.append(shm.Channel(size=1 << 20))
    return _vc[0]


def test_channel_refuses_other_types():
    ch = shm.Channel(size=8192)
    for bad in ([1], {1: 2}, (1, [2]), object(), True.__class__):
        with pytest.raises(tpshare.NotShareableError) as info:
            ch.send(bad)
        assert isinstance(info.value, TypeError)
    with pytest.raises(tpshare.NotShareableError, match="builtins.list"):
        ch.send((1, (2, [3])))
    with pytest.raises(tpshare.NotShareableError,
                       match="builtins.set .*pickle=True"):
        ch.send({1})
    assert ch.qsize() == 0


def test_registered_c_types_without_the_flag_do_not_cross():
    import tpshare_testext as ext
    ch = shm.Channel(size=8192)
    with pytest.raises(tpshare.NotShareableError,
                       match="tpshare_testext.Point.*SELF_CONTAINED"):
        ch.send(ext.Point(1, 2))
    with pytest.raises(tpshare.NotShareableError,
                       match="tpshare_testext.Matrix"):
        ch.send(ext.Matrix(1, 1, [1.0]))
    with pytest.raises(tpshare.NotShareableError, match="Point"):
        ch.send((1, ext.Point(1, 2)))
    assert ch.qsize() == 0 and ch.stats()["sent"] == 0


def test_self_contained_flag_is_listed():
    import tpshare_testext as ext  # noqa: F401
    flags = {name: f for name, _, f in tpshare.registered()}
    assert "self_contained" in flags["tpshare_testext.Chunk"]
    assert "self_contained" not in flags["tpshare_testext.Point"]


def test_self_contained_type_crosses_to_another_process():
    import tpshare_testext as ext
    a, b = shm.Channel(size=1 << 20), shm.Channel(size=1 << 20)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=shm_peers.registered_echo, args=(a, b))
    p.start()
    try:
        frees = ext.chunk_frees()[0]
        # Inline (16 bytes or less) and DataAlloc memory (ptr, up to 128).
        sent = [ext.Chunk(b"abc"), ext.Chunk(bytes(range(100))),
                ext.Chunk(b"")]
        for c in sent:
            a.send(c)
        a.send(None)
        got = [b.recv(timeout=30) for _ in range(len(sent) + 1)]
    finally:
        p.join(30)
    assert p.exitcode == 0
    assert got[-1] is None
    for c, r in zip(sent, got):
        assert type(r) is ext.Chunk and r is not c and r.bytes == c.bytes
    # The sender's data was freed at each send: 3 there, 3 back here.
    assert ext.chunk_frees()[0] - frees == 3
    assert used(a) == used(b) == 0


def test_self_contained_promise_is_checked():
    import tpshare_testext as ext
    ch = shm.Channel(size=1 << 20)
    # A Chunk over 16 KiB keeps a reference to the sender's bytes
    # (data->obj): not self-contained after all, refused.
    with pytest.raises(tpshare.NotShareableError, match="owner-bound"):
        ch.send(ext.Chunk(b"x" * 20000))
    assert ch.qsize() == 0 and used(ch) == 0


def test_hostile_registered_item_is_an_error():
    import marshal
    import tpshare_testext as ext  # noqa: F401
    ch = shm.Channel(size=1 << 20)
    name = "tpshare_testext.Chunk"
    z = bytes(16)
    bad = [
        (b"\xff\x00garbage", shm.CorruptSegmentError),
        (marshal.dumps([1, 2]), shm.CorruptSegmentError),
        (marshal.dumps((name, z, 5, 1, b"abc")), shm.CorruptSegmentError),
        (marshal.dumps((name, b"short", 0, 0, None)),
         shm.CorruptSegmentError),
        (marshal.dumps((name, z, 0, 1 << 40, None)), shm.CorruptSegmentError),
        (marshal.dumps(("no.Such" * 100, z, 0, 0, None)), LookupError),
        # Chunk's own rebuild checks what tpshare cannot: size and aux.
        (marshal.dumps((name, z, 1000, 0, None)), ValueError),
        (marshal.dumps((name, z, 3, 1, None)), ValueError),
        (marshal.dumps((name, z, 3, 99, b"abc")), ValueError),
        # A registration without the flag does not rebuild foreign data.
        (marshal.dumps(("tpshare_testext.Point", z, 0, 0, None)),
         tpshare.NotShareableError),
    ]
    for payload, exc in bad:
        shm.Segment.send(ch, payload, tag=3)
        with pytest.raises(exc):
            ch.recv(timeout=1)
    shm.Segment.send(ch, marshal.dumps((name, z, 3, 1, b"abc")), tag=3)
    assert ch.recv(timeout=1).bytes == b"abc"
    assert ch.qsize() == 0 and used(ch) == 0


def test_hostile_value_kinds_are_refused_before_marshal():
    """A peer may write any marshal data as a value; the receiver loads
    only the kinds a Channel sends (a code object is never built)."""
    import marshal
    ch = shm.Channel(size=1 << 20)
    code = compile("1 + 1", "<peer>", "eval")
    deep = b")\x01" * 3000 + b")\x00"      # 3001 nested tuples
    bad = [
        marshal.dumps(code),
        marshal.dumps((1, code)),
        marshal.dumps([1, 2]),
        marshal.dumps({1: 2}),
        marshal.dumps({1, 2}),
        marshal.dumps(frozenset({1})),
        marshal.dumps(...),
        marshal.dumps(StopIteration),
        marshal.dumps((1, 2)) + b"N",          # trailing bytes
        b"(" + (1 << 30).to_bytes(4, "little") + b"N",   # a lying count
        b"s" + (100).to_bytes(4, "little") + b"abc",     # a lying length
        b"l" + (0x80000000).to_bytes(4, "little"),       # INT32_MIN digits
        deep,                                   # deeper than marshal allows
        b"",
    ]
    for payload in bad:
        shm.Segment.send(ch, payload, tag=1)
        with pytest.raises(shm.CorruptSegmentError):
            ch.recv(timeout=1)
    # The same through a batch: the bad item is an error in its place.
    shm.Segment.send(ch, marshal.dumps(7), tag=1)
    shm.Segment.send(ch, marshal.dumps(code), tag=1)
    assert ch.recv_many(5, timeout=1) == [7]
    with pytest.raises(shm.CorruptSegmentError):
        ch.recv_many(5, timeout=1)
    good = [(1 << 200, -(1 << 70), 2.5j, "é" * 3, sys.intern("k"), "k"),
            ("ab", "ab", "ab"), (), -1, True, None, b"", "x" * 5000]
    for value in good:
        shm.Segment.send(ch, marshal.dumps(value), tag=1)
        assert ch.recv(timeout=1) == value
    assert ch.qsize() == 0 and used(ch) == 0


def test_channel_pickle_opt_in_both_ends():
    ch = shm.Channel(size=8192, pickle=True)
    ch.send({"a": [1, 2]})
    assert ch.recv() == {"a": [1, 2]}
    plain = shm.Channel.open(ch.name)
    ch.send([1])
    with pytest.raises(ValueError):
        plain.recv()
    assert used(ch) == 0 and ch.qsize() == 0


def test_channel_recv_many_keeps_every_item_and_error():
    ch = shm.Channel(size=1 << 16, pickle=True)
    plain = shm.Channel.open(ch.name)        # refuses pickled items
    ch.send_many([1, {"x"}, 3, 4])
    assert plain.recv_many(10) == [1]
    with pytest.raises(ValueError, match="pickle=True"):
        plain.recv_many(10)
    assert plain.recv() == 3
    assert plain.recv_many(10) == [4]
    ch.send_many([{"y"}, 2])
    with pytest.raises(ValueError):
        plain.recv_many(10)
    assert plain.recv_many(10) == [2]
    assert ch.qsize() == 0 and used(ch) == 0


def test_channel_buffers_and_batches():
    ch = shm.Channel(size=1 << 16)
    buf = ch.buffer(1000)
    memoryview(buf)[:3] = b"abc"
    t = ch.send(buf)
    got = ch.recv()
    assert isinstance(got, memoryview) and bytes(got[:3]) == b"abc"
    del got
    assert t.released
    ch.send_many([1, b"two", (3.0, "four"), bytearray(b"five")])
    a, b, c, d = ch.recv_many(10)
    assert (a, b, c, bytes(d)) == (1, b"two", (3.0, "four"), b"five")


# -- other processes ------------------------------------------------------

@pytest.mark.parametrize("method", START_METHODS)
def test_start_methods(method):
    ctx = mp.get_context(method)
    req, resp = shm.MemChannel(size=1 << 20), shm.MemChannel(size=1 << 20)
    p = ctx.Process(target=shm_peers.echo, args=(req, resp, 2))
    p.start()
    req.send(b"abc")
    big = bytes(range(256)) * 20
    t = req.send(big)
    assert bytes(resp.recv(timeout=60)) == b"cba"
    got = resp.recv(timeout=60)
    assert type(got.obj) is shm.View and bytes(got) == big[::-1]
    del got
    p.join(60)
    assert p.exitcode == 0
    assert t.released and used(req) == 0 and used(resp) == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_child_writes_shared_pages(method):
    ctx = mp.get_context(method)
    req, resp = shm.MemChannel(size=1 << 20), shm.MemChannel(size=1 << 20)
    buf = req.buffer(10000)
    mine = memoryview(buf)
    mine[:5] = b"first"
    p = ctx.Process(target=shm_peers.scribble, args=(req, resp))
    p.start()
    t = req.send(buf, writable=True)
    assert bytes(resp.recv(timeout=60)).startswith(b"done")
    assert bytes(mine[:5]) == b"child"
    assert not t.released
    req.send(b"end")
    assert t.wait(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    mine.release()


def test_channel_values_across_spawn():
    ctx = mp.get_context("spawn")
    a, b = shm.Channel(size=1 << 20), shm.Channel(size=1 << 20)
    p = ctx.Process(target=shm_peers.values, args=(a, b))
    p.start()
    items = [1, 2 ** 200, -0.5, 1j, "héllo", b"\0" * 300, (1, ("x", None)),
             True, None]
    a.send_many(items)
    got = [b.recv(timeout=60) for _ in items]
    p.join(60)
    assert got == items and p.exitcode == 0


def test_through_multiprocessing_queue():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ch = shm.MemChannel(size=1 << 16)
    p = ctx.Process(target=shm_peers.from_queue, args=(q, 3))
    p.start()
    q.put(ch)
    assert [bytes(ch.recv(timeout=60)) for _ in range(3)] == [b"0", b"1",
                                                             b"2"]
    p.join(60)
    assert p.exitcode == 0


def test_unrelated_process_opens_by_name(mc):
    r = run_child(f"""
        from tpshare import shm
        ch = shm.MemChannel.open({mc.name!r})
        ch.send(b"from afar" * 50)
        b = ch.buffer(100)
        memoryview(b)[:4] = b"zero"
        ch.send(b)
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert bytes(mc.recv(timeout=1)) == b"from afar" * 50
    assert bytes(mc.recv(timeout=1)[:4]) == b"zero"
    assert used(mc) == 0


def test_subinterpreter_own_gil(mc):
    with Sub() as s:
        s.run(f"""
            from tpshare import shm
            ch = shm.MemChannel.open({mc.name!r})
            ch.send(b"sub" * 100)
            t = ch.send(ch.buffer(64))
            v = shm.Channel(size=8192)
            v.send((1, "two"))
            ok = v.recv() == (1, "two")
            ch.send(b"ok" if ok else b"bad")
        """)
        assert bytes(mc.recv(timeout=5)) == b"sub" * 100
        assert len(mc.recv(timeout=5)) == 64
        assert bytes(mc.recv(timeout=5)) == b"ok"
        s.run("del ch, t, v")
    assert used(mc) == 0


def test_subinterpreter_of_another_process(mc):
    r = run_child(f"""
        from support import Sub
        with Sub() as s:
            s.run(\"\"\"
                from tpshare import shm
                ch = shm.MemChannel.open({mc.name!r})
                b = ch.buffer(300)
                memoryview(b)[:9] = b"child-sub"
                ch.send(b)
                del ch, b
            \"\"\")
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    mv = mc.recv(timeout=5)
    assert bytes(mv[:9]) == b"child-sub" and len(mv) == 300
    del mv
    assert used(mc) == 0


# -- dead peers and cleanup ----------------------------------------------

def test_dead_holder_reclaimed():
    ctx = mp.get_context("fork")
    ch = shm.MemChannel(size=1 << 20)
    ready = shm.MemChannel(size=8192)
    buf = ch.buffer(5000)
    t = ch.send(buf)
    p = ctx.Process(target=shm_peers.sleeper, args=(ch, ready))
    p.start()
    assert bytes(ready.recv(timeout=60)) == b"held 5000"
    assert used(ch) == 5120 + 4096 and not t.released
    os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    assert t.wait(timeout=30)  # the wait itself reclaims
    assert ch.reclaim() == 0 and used(ch) == 0
    assert ch.stats()["reclaimed"] == 2
    ch.send(b"still fine")
    assert bytes(ch.recv(timeout=1)) == b"still fine"


def test_reused_pid_is_not_the_holder():
    # A block held by a live process whose start time is not the one
    # recorded: the pid was reused, the holder is gone.
    ctx = mp.get_context("fork")
    ch = shm.MemChannel(size=1 << 16)
    ready = shm.MemChannel(size=8192)
    ch.send(bytes(500))
    p = ctx.Process(target=shm_peers.sleeper, args=(ch, ready))
    p.start()
    try:
        assert bytes(ready.recv(timeout=60)) == b"held 500"
        assert ch.reclaim() == 0 and used(ch) == 512 + 4096
        raw = _raw(ch)
        lay = ch._layout()
        for i in range(lay["nblocks"]):
            at = lay["blocks_off"] + i * lay["block_size"]
            state, pid = struct.unpack_from("<Ii", raw, at)
            if state and pid == p.pid:
                start = struct.unpack_from("<Q", raw, at + 32)[0]
                assert start > 0
                struct.pack_into("<Q", raw, at + 32, start + 1)
        raw.close()
        assert ch.reclaim() == 2 and used(ch) == 0
    finally:
        p.kill()
        p.join(60)


@pytest.mark.parametrize("torn", [False, True])
def test_holder_killed_inside_the_lock(torn):
    ctx = mp.get_context("fork")
    ch = shm.MemChannel(size=1 << 16)
    ready = shm.MemChannel(size=8192)
    ch.send(b"queued" * 30)
    p = ctx.Process(target=shm_peers.die_in_lock, args=(ch, torn, ready))
    p.start()
    assert bytes(ready.recv(timeout=60)) == b"locked"
    with pytest.raises(tpshare.ChannelEmpty):
        ready.recv(timeout=0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    # The next locker repairs: the queued item survives, a half-done
    # push is dropped and its block freed.
    assert bytes(ch.recv(timeout=10)) == b"queued" * 30
    s = ch.stats()
    assert s["repairs"] == 1 and s["dropped"] == (1 if torn else 0)
    assert used(ch) == 0 and ch.qsize() == 0
    ch.send(b"after")
    assert bytes(ch.recv(timeout=1)) == b"after"


def test_kills_at_random_points():
    ctx = mp.get_context("fork")
    ch = shm.MemChannel(maxsize=64, size=1 << 20)
    ready = shm.MemChannel(size=8192)
    import random
    rnd = random.Random(1234)
    start = time.monotonic()
    rounds = 0
    while rounds < 40 and time.monotonic() - start < 12:
        procs = [ctx.Process(target=shm_peers.hammer,
                             args=(ch, rnd.random(), ready))
                 for _ in range(3)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.recv(timeout=60)
        time.sleep(rnd.uniform(0.002, 0.08))
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(60)
        rounds += 1
        # The channel still works for the survivor.
        ch.send(b"probe" * 40, timeout=5)
        while True:
            mv = ch.recv(timeout=5)
            last = bytes(mv)
            del mv
            if last == b"probe" * 40 and ch.qsize() == 0:
                break
    # Everything the dead held is back.
    ch.reclaim()
    assert ch.qsize() == 0
    stats = ch.stats()
    print(rounds, stats)
    assert used(ch) == 0, stats
    assert rounds >= 5 and stats["reclaimed"] > 0


def _dev_shm():
    """/dev/shm's entries, less multiprocessing's own semaphores and
    segments (other processes of the machine may make some meanwhile;
    tpshare.shm makes none of any name)."""
    return sorted(n for n in os.listdir("/dev/shm")
                  if not n.startswith(("sem.", "psm_", "wnsm_")))


def _py(code):
    """A fresh Python process running code, its stdin and stdout piped."""
    import subprocess
    import sys
    import textwrap
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)))


def _alive(pid):
    """Whether pid runs (a zombie, not reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_nothing_left_in_dev_shm_after_sigkill():
    before = _dev_shm()
    creator = _py("""
        import multiprocessing as mp, os, signal
        from tpshare import shm
        import shm_peers
        chs = [shm.MemChannel(size=1 << 20) for _ in range(3)]
        ready = shm.MemChannel(size=8192)
        chs[0].send(bytes(10000))
        p = mp.get_context("spawn").Process(target=shm_peers.sleeper,
                                            args=(chs[0], ready))
        p.start()
        ready.recv(timeout=60)
        print(p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    holder = int(creator.stdout.readline())
    assert creator.wait(60) == -signal.SIGKILL
    # The orphaned holder, then nobody, has the segment: a memfd, mapped
    # and open, and nothing of /dev/shm.
    with open(f"/proc/{holder}/maps") as f:
        maps = f.read()
    assert "/memfd:tpshare.shm" in maps and "/dev/shm/" not in maps
    assert _dev_shm() == before
    os.kill(holder, signal.SIGKILL)
    creator.stdout.close()
    creator.stdin.close()
    deadline = time.monotonic() + 30
    while _alive(holder) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(holder)
    assert _dev_shm() == before


def test_segment_outlives_its_creator():
    creator = _py("""
        import sys
        from tpshare import shm
        ch = shm.MemChannel(size=1 << 16)
        ch.send(b"kept" * 100)
        print(ch.name, flush=True)
        sys.stdin.read()
    """)
    name = creator.stdout.readline().strip()
    holder = _py(f"""
        import sys
        from tpshare import shm
        ch = shm.MemChannel.open({name!r})
        print(ch.name, flush=True)
        sys.stdin.read()
    """)
    held = holder.stdout.readline().strip()
    creator.kill()
    assert creator.wait(60) == -signal.SIGKILL
    with pytest.raises(FileNotFoundError):
        shm.MemChannel.open(name)
    # The creator is gone: the holder's own name opens it.
    ch = shm.MemChannel.open(held)
    assert bytes(ch.recv(timeout=5)) == b"kept" * 100
    holder.communicate("", timeout=60)
    creator.communicate(timeout=60)


# -- a hostile segment ---------------------------------------------------

def _raw(ch):
    """A second, writable mapping of ch's segment."""
    fd = os.open(f"/proc/self/fd/{ch.fd}", os.O_RDWR)
    try:
        return mmap.mmap(fd, ch._layout()["total"])
    finally:
        os.close(fd)


def test_corrupt_header_refused_at_open(mc):
    raw = _raw(mc)
    lay = mc._layout()
    for off, value in ((0, b"XXXXXXXX"), (64, struct.pack("<Q", 1)),
                       (88, struct.pack("<Q", 12))):
        saved = raw[off:off + len(value)]
        raw[off:off + len(value)] = value
        with pytest.raises(shm.CorruptSegmentError):
            shm.MemChannel.open(mc.name)
        raw[off:off + len(value)] = saved
    assert shm.MemChannel.open(mc.name).capacity == lay["nslots"]
    raw.close()


def test_corrupt_ring_and_slots(mc):
    raw = _raw(mc)
    lay = mc._layout()
    head = lay["head_off"]
    # Counters that cannot be: an error, then an empty, working channel.
    raw[head:head + 8] = struct.pack("<Q", 10 ** 12)
    with pytest.raises(shm.CorruptSegmentError):
        mc.recv(timeout=0)
    mc.send(b"ok")
    assert bytes(mc.recv(timeout=0)) == b"ok"

    def slot_off():
        h = struct.unpack_from("<Q", raw, head)[0]
        return lay["slots_off"] + (h % lay["nslots"]) * lay["slot_size"]
    # kind, len (inline too long), block index, block state/offset.
    for patch in ((0, struct.pack("<I", 7)), (8, struct.pack("<Q", 97)),
                  (16, struct.pack("<I", 0xFFFFFFF0))):
        mc.send(b"a" * 10 if patch[0] == 8 else bytes(1000))
        o = slot_off() + patch[0]
        raw[o:o + len(patch[1])] = patch[1]
        with pytest.raises(shm.CorruptSegmentError):
            mc.recv(timeout=0)
        mc.send(b"next")
        assert bytes(mc.recv(timeout=0)) == b"next"
    mc.send(bytes(1000))
    block = struct.unpack_from("<I", raw, slot_off() + 16)[0]
    boff = lay["blocks_off"] + block * lay["block_size"] + 16
    raw[boff:boff + 8] = struct.pack("<Q", mc.size + 4096)
    with pytest.raises(shm.CorruptSegmentError):
        mc.recv(timeout=0)
    raw.close()
    # Nothing of the dropped items stays taken, and the channel works.
    assert mc.qsize() == 0 and used(mc) == 0, mc.stats()
    mc.send(bytes(2000))
    assert len(mc.recv(timeout=0)) == 2000


def test_corrupt_counters_on_the_sending_side(mc):
    mc.send(bytes(1000))
    raw = _raw(mc)
    tail = mc._layout()["tail_off"]
    raw[tail:tail + 8] = struct.pack("<Q", 10 ** 12)
    with pytest.raises(shm.CorruptSegmentError):
        mc.send(b"x")
    raw.close()
    assert mc.qsize() == 0 and used(mc) == 0
    mc.send(b"x")
    assert bytes(mc.recv(timeout=0)) == b"x"


def test_random_corruption_never_crashes():
    r = run_child("""
        import mmap, os, random, tpshare
        from tpshare import shm
        rnd = random.Random(7)
        errors = 0
        for round in range(150):
            ch = shm.MemChannel(size=1 << 16, maxsize=16)
            lay = ch._layout()
            for i in range(6):
                ch.send(bytes(rnd.choice((5, 500, 3000))))
            fd = os.open(f"/proc/self/fd/{ch.fd}", os.O_RDWR)
            raw = mmap.mmap(fd, lay["total"])
            os.close(fd)
            for _ in range(rnd.randint(1, 20)):
                region = rnd.choice(("hdr", "slots", "blocks"))
                if region == "hdr":
                    lo, hi = 0, lay["lock_off"]
                    lo = rnd.choice((0, lay["head_off"]))
                    hi = lo + 64
                elif region == "slots":
                    lo, hi = lay["slots_off"], lay["blocks_off"]
                else:
                    lo, hi = lay["blocks_off"], lay["bitmap_off"]
                o = rnd.randrange(lo, hi)
                raw[o] = rnd.randrange(256)
            for op in range(12):
                try:
                    k = rnd.random()
                    if k < 0.4:
                        mv = ch.recv(timeout=0)
                        bytes(mv)
                    elif k < 0.7:
                        ch.send(bytes(rnd.choice((5, 700))), timeout=0)
                    elif k < 0.8:
                        ch.stats(); ch.reclaim()
                    elif k < 0.9:
                        shm.MemChannel.open(ch.name)
                    else:
                        b = ch.buffer(100, timeout=0); ch.send(b, timeout=0)
                except (tpshare.ChannelEmpty, tpshare.ChannelFull,
                        tpshare.ChannelClosed, shm.CorruptSegmentError,
                        ValueError):
                    errors += 1
            raw.close()
        print("errors", errors)
    """, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[1]) > 0


# -- the benchmark -------------------------------------------------------

def test_bench_experiment_runs_and_reports(monkeypatch):
    from tpshare.bench import cli, common
    from tpshare.bench import shm as bench_shm
    assert cli.build_parser().parse_args(["shm"]).experiments == ["shm"]
    # Few items and one buffer size: a smoke run of every contender.
    monkeypatch.setattr(bench_shm, "_count", lambda ctx, kind, size: 128)
    monkeypatch.setattr(bench_shm, "_buffer_sizes", lambda ctx: [8192])
    monkeypatch.setattr(bench_shm, "_pipeline_count", lambda ctx, size: 64)

    class Ctx:
        quick = True
        repeat = 1
        progress = common.Progress(100, enabled=False)
    res = bench_shm.run(Ctx)
    assert res["errors"] == {}
    for kind in ("shm", "shm-batch", "mp-queue", "mp-queue-batch"):
        assert res["small"][kind]["median_msgs_per_s"] > 0
    for kind in ("shm-buffer", "shm-copy", "mp-queue", "shared_memory"):
        assert res["buffers"]["8192"][kind]["median_msgs_per_s"] > 0
    if "faster-fifo" in res["skipped"]:
        assert "faster-fifo" not in res["small"]
    else:
        assert res["small"]["faster-fifo"]["median_msgs_per_s"] > 0
    assert set(res["pingpong"]) == {"shm", "mp-pipe"}
    # The same pipeline code between interpreters and between processes.
    for size in bench_shm.CROSS_SIZES:
        point = res["pipeline"][str(size)]
        assert set(point) == {"interpreters", "processes"}
        assert all(x["n"] == 64 and x["median_msgs_per_s"] > 0
                   for x in point.values())
    text = bench_shm.report(res)
    assert "same producer/consumer code" in text
    assert "shm.MemChannel" in text and "multiprocessing.Pipe" in text
    assert "hand-off alone" in text
    assert max(len(line) for line in text.splitlines()) <= common.WIDTH


def test_bench_plot_of_the_shm_experiment(tmp_path):
    pytest.importorskip("matplotlib")
    from tpshare.bench import plots
    from tpshare.bench import shm as bench_shm

    def rate(r):
        return {"n": 10, "rates": [r], "median_msgs_per_s": r,
                "median_bytes_per_s": r}
    res = {"small": {k: rate(1e5 * (i + 1))
                     for i, k in enumerate(bench_shm.SMALL_NAMES)},
           "buffers": {str(s): {k: rate(1e4) for k in bench_shm.BUFFER_NAMES}
                       for s in (4096, 1 << 20, 1 << 28)},
           "pingpong": {k: {"n": 10, "median_ns": 9000}
                        for k in bench_shm.PING_NAMES}}
    doc = {"machine": {"python": "3.13.0", "cpu": "x", "cores": 2},
           "quick": True, "experiments": {"shm": res}}
    figs = {}

    def keep(fig, plt, path):
        figs[os.path.basename(path)] = fig
        return path
    saved = plots._save
    plots._save = keep
    try:
        assert plots.draw_all(doc, str(tmp_path)) == [
            str(tmp_path / "shm.png")]
    finally:
        plots._save = saved
    fig = figs["shm.png"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert legend.y1 <= ax.get_tightbbox(renderer).y0
    lines = fig.axes[1].get_lines()
    assert len(lines) == len(bench_shm.BUFFER_NAMES)
    assert len({line.get_color() for line in lines}) == len(lines)


def _address(buf):
    import ctypes
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c


def test_large_freed_blocks_are_handed_out_again():
    """A freed large block keeps its span for the next block of its size
    (no bitmap work: the hand-off costs the same at every size); a
    request the cache cannot serve gets the cached spans back."""
    ch = shm.MemChannel(size=4 << 20)
    a, b = ch.buffer(1 << 20), ch.buffer(1 << 20)
    at_b = _address(b)
    del b, a
    assert used(ch) == 0
    c = ch.buffer((1 << 20) - 100)      # the same granules: b's span
    assert _address(c) == at_b and used(ch) == 1 << 20
    del c
    heap = ch.stats()["heap_bytes"]
    whole = ch.buffer(heap)             # every span, cached ones too
    assert used(ch) == heap
    del whole
    assert used(ch) == 0
    # A received item's block comes back the same way.
    buf = ch.buffer(1 << 20)
    at = _address(buf)
    t = ch.send(buf)
    ch.recv(timeout=1).release()
    assert t.released
    assert _address(ch.buffer(1 << 20)) == at


# -- batches of values ------------------------------------------------------

BATCH_VALUES = [
    None, True, False, 0, 1, -1, 2**31 - 1, -2**31, 2**31, -2**31 - 1,
    2**100, 0.0, -0.0, 1.5, float("inf"), float("-inf"), b"", b"x" * 91,
    b"y" * 92, "", "plain", "\u00e9t\u00e9 \u2603", "\U0001f600" * 22,
    "z" * 92, "\ud800 lone", (1, "a", b"b"), (), 1j, bytearray(b"buf"),
]


def _same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, bytearray):
        return bytes(b) == a
    return type(a) is type(b) and a == b and (
        not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def test_channel_batch_values_come_back_as_sent():
    """send_many() writes small values in C and recv_many() reads them
    in C: each comes back as itself, and either end may use the one-item
    calls (their Python encoder and decoder read the same data)."""
    ch = shm.Channel(size=1 << 20)
    items = BATCH_VALUES + [float("nan")]
    trackers = ch.send_many(items)
    assert len(trackers) == len(items) and all(t.released for t in trackers)
    got = ch.recv_many(len(items), timeout=1)
    assert len(got) == len(items)
    assert all(_same(a, b) for a, b in zip(items, got)), (items, got)
    ch.send_many(items)
    one = [ch.recv(timeout=1) for _ in items]
    assert all(_same(a, b) for a, b in zip(items, one))
    for obj in items:
        ch.send(obj)
    got = ch.recv_many(len(items), timeout=1)
    assert all(_same(a, b) for a, b in zip(items, got))
    assert used(ch) == 0 and ch.qsize() == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(),
                          st.floats(allow_nan=False), st.binary(),
                          st.text()), max_size=20))
def test_channel_batch_values_property(items):
    ch = shm.Channel(size=1 << 20)
    try:
        ch.send_many(items)
        got = ch.recv_many(100, timeout=1) if items else []
        assert all(_same(a, b) for a, b in zip(items, got))
        assert len(got) == len(items)
    finally:
        ch.close()


def test_channel_batch_with_an_item_that_fails_queues_nothing():
    ch = shm.Channel(size=1 << 20)
    with pytest.raises(tpshare.NotShareableError):
        ch.send_many([1, b"x" * 300, "two", object(), 3])
    assert ch.qsize() == 0 and used(ch) == 0
    ch.send_many([1, b"x" * 300])
    assert ch.recv_many(10, timeout=1) == [1, b"x" * 300]
    assert used(ch) == 0


def test_batch_larger_than_the_ring_or_the_heap():
    ch = shm.Channel(maxsize=4, size=1 << 20)
    with pytest.raises(ValueError, match="never fit"):
        ch.send_many(range(5))
    assert ch.qsize() == 0
    # Blocks that never fit the heap together: refused at once (a batch
    # waited for room only its own blocks took, until the timeout or, by
    # default, forever).
    mc = shm.MemChannel(size=64 << 10)
    heap = mc.stats()["heap_bytes"]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="never fit"):
        mc.send_many([bytes(heap // 2 + 256), bytes(heap // 2 + 256)],
                     timeout=20)
    assert time.monotonic() - t0 < 10
    assert used(mc) == 0 and mc.qsize() == 0
    buf = mc.buffer(heap // 2 + 256)
    with pytest.raises(ValueError, match="never fit"):
        mc.send_many([bytes(heap // 2 + 256), buf], timeout=20)
    assert not buf.sent and used(mc) == heap // 2 + 256
    mc.send_many([buf, bytes(1000)])
    assert [len(m) for m in mc.recv_many(5, timeout=1)] == [
        heap // 2 + 256, 1000]
    assert used(mc) == 0


def test_recv_many_timeout_and_wakeup():
    import threading
    ch = shm.Channel(size=1 << 20)
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv_many(10, timeout=0.05)
    later = threading.Timer(0.05, ch.send_many, ([7, "eight", b"nine"],))
    later.start()
    try:
        assert ch.recv_many(10, timeout=30) == [7, "eight", b"nine"]
    finally:
        later.join()


def test_sender_killed_between_batches_leaves_whole_batches():
    ctx = mp.get_context("fork")
    ch = shm.Channel(maxsize=64, size=1 << 20)
    ready = shm.MemChannel(size=8192)
    p = ctx.Process(target=shm_peers.batches, args=(ch, ready))
    p.start()
    got = []
    try:
        ready.recv(timeout=60).release()
        while len(got) < 500:
            got += ch.recv_many(64, timeout=30)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(60)
    # Whatever the kill interrupted, the channel holds whole batches.
    while True:
        try:
            got += ch.recv_many(64, timeout=0)
        except tpshare.ChannelEmpty:
            break
    assert len(got) % 10 == 0
    ints = [x for x in got if type(x) is int]
    assert ints == [k * 10 + i for k in range(len(got) // 10)
                    for i in range(9)]
    assert got[9::10] == [bytes(300)] * (len(got) // 10)
    del got
    ch.reclaim()
    assert used(ch) == 0 and ch.qsize() == 0
    ch.send_many([1, bytes(300)])
    assert ch.recv_many(5, timeout=1) == [1, bytes(300)]


def test_full_heap_keeps_the_cached_spans():
    """A send that finds the heap full waits without giving the cached
    spans back (nor scanning the bitmap): the next block of a cached
    size gets the cached span."""
    ch = shm.MemChannel(size=4 << 20)
    heap = ch.stats()["heap_bytes"]
    blocks = [ch.buffer(1 << 20) for _ in range(heap >> 20)]
    tail = heap & ((1 << 20) - 1)
    rest = ch.buffer(tail) if tail else None
    assert used(ch) == heap
    at_b = _address(blocks[1])
    del blocks[1]                   # cached
    with pytest.raises(tpshare.ChannelFull):
        ch.buffer(2 << 20, timeout=0)
    del blocks[0]                   # cached too
    assert _address(ch.buffer(1 << 20)) == at_b
    del rest


@pytest.mark.parametrize("maxsize", [0, 64])
def test_heap_holds_the_size_asked_for(maxsize):
    """size= is payload space: the tables come on top (they were sized
    for the whole segment, so the heap came out short of size)."""
    for size in (4096, 233472, 1 << 20, (64 << 20) + 12345):
        ch = shm.MemChannel(maxsize=maxsize, size=size)
        heap = ch.stats()["heap_bytes"]
        assert size <= heap < size + 4096 + shm.GRANULE
        assert ch.capacity == (maxsize or min(max(size // 1024, 256),
                                              65536))
        whole = ch.buffer(size)
        assert used(ch) >= size
        del whole
        ch.close()
