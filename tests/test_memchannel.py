"""MemChannel: buffers between interpreters, zero-copy, with release
propagated back to the sender and observed through trackers; and
tpshare.Buffer, memory of no interpreter."""

import array
import gc
import threading
import time

import numpy
import pytest

import tpshare


def test_zero_copy_across_interpreters(sub):
    mc = tpshare.MemChannel()
    sub.put("mc", mc)
    ba = bytearray(b"A" * 1000)
    tracker = mc.send(ba)
    sub.run("mv = mc.recv()")
    assert sub.eval("(mv.nbytes, mv.readonly, type(mv.obj).__name__)") == "(1000, True, 'View')"
    ba[0:3] = b"XYZ"
    assert sub.eval("bytes(mv[:3])") == repr(b"XYZ")  # the same memory
    assert not tracker.released
    with pytest.raises(BufferError):
        ba.append(0)
    sub.run("mv.release()")
    assert tracker.wait(2)
    assert tracker.released
    ba.append(0)


def test_layout_survives_the_channel(sub):
    mc = tpshare.MemChannel()
    sub.put("mc", mc)
    a = numpy.arange(60, dtype=numpy.float32).reshape(3, 4, 5)[:, ::2, 1::2]
    tracker = mc.send(a)
    sub.run("mv = mc.recv(); shape, strides, fmt = mv.shape, mv.strides, mv.format; s = sum(mv.tolist()[2][1])")
    assert sub.eval("(shape, strides, fmt)") == repr((a.shape, a.strides, "f"))
    assert float(sub.eval("s")) == float(a[2][1].sum())
    sub.run("mv.release()")
    assert tracker.wait(2)


def test_writable_views_write_through(sub):
    mc = tpshare.MemChannel()
    sub.put("mc", mc)
    arr = array.array("i", [1, 2, 3])
    tracker = mc.send(arr, writable=True)
    sub.run("mv = mc.recv(); mv[1] = 42; ro = mv.readonly; mv.release()")
    assert sub.eval("ro") == "False"
    assert arr.tolist() == [1, 42, 3]
    assert tracker.wait(2)


def test_writable_needs_a_writable_exporter():
    mc = tpshare.MemChannel()
    with pytest.raises(BufferError):
        mc.send(b"read-only bytes", writable=True)
    with pytest.raises(BufferError):
        mc.send(memoryview(bytearray(3)).toreadonly(), writable=True)
    assert mc.qsize() == 0


def test_non_buffers_are_refused_and_nothing_is_queued():
    mc = tpshare.MemChannel()
    for bad in (1, "str", [1], None):
        with pytest.raises(TypeError, match="buffer exporter"):
            mc.send(bad)
    assert mc.qsize() == 0


def test_failed_send_releases_the_export():
    mc = tpshare.MemChannel(maxsize=1)
    mc.send(b"x")
    ba = bytearray(10)
    with pytest.raises(tpshare.ChannelFull):
        mc.send(ba, timeout=0.01)
    ba.append(1)  # not exported any more
    mc.close()
    with pytest.raises(tpshare.ChannelClosed):
        mc.send(ba)
    ba.append(1)


def test_bytes_go_zero_copy_through_memchannel():
    mc = tpshare.MemChannel()
    data = b"immutable" * 10
    tracker = mc.send(data)
    mv = mc.recv()
    assert mv.tobytes() == data and mv.readonly
    mv.release()
    assert tracker.released


def test_tracker_wait_times_out_then_succeeds():
    mc = tpshare.MemChannel()
    tracker = mc.send(bytearray(4))
    mv = mc.recv()
    start = time.monotonic()
    assert tracker.wait(0.1) is False
    assert time.monotonic() - start >= 0.09
    with pytest.raises(ValueError):
        tracker.wait(-1)
    threading.Timer(0.1, mv.release).start()
    assert tracker.wait(5) is True
    assert "released" in repr(tracker)


def test_tracker_wait_takes_timeout_by_keyword():
    mc = tpshare.MemChannel()
    tracker = mc.send(bytearray(4))
    mv = mc.recv()
    assert tracker.wait(timeout=0) is False
    with pytest.raises(TypeError, match="unexpected keyword argument 'secs'"):
        tracker.wait(secs=1)
    with pytest.raises(TypeError, match="at most 1 argument"):
        tracker.wait(1, timeout=1)
    with pytest.raises(ValueError):
        tracker.wait(timeout=-1)
    mv.release()
    assert tracker.wait(timeout=1.0) is True


def test_tracker_sees_a_release_made_in_the_receiver(sub):
    mc = tpshare.MemChannel()
    tracker = mc.send(bytearray(4))
    # A tracker stays with its sender: it cannot be sent anywhere.
    assert not tpshare.is_shareable(tracker)
    sub.put("mc", mc)
    sub.run("mv = mc.recv()")
    sub.run("mv.release()")
    assert tracker.wait(2)


def test_blocked_sender_sees_release_from_another_interpreter(sub):
    mc = tpshare.MemChannel()
    sub.put("mc", mc)
    tracker = mc.send(bytearray(100))
    sub.run("mv = mc.recv()")
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(tracker.wait(5)))
    waiter.start()
    time.sleep(0.1)
    sub.run("mv.release()")
    waiter.join(5)
    assert seen == [True]


def test_buffer_is_memory_of_no_interpreter(sub):
    buf = tpshare.Buffer(16)
    assert len(buf) == buf.nbytes == 16 and buf.refs == 1
    with pytest.raises(ValueError):
        tpshare.Buffer(-1)
    memoryview(buf)[:5] = b"hello"
    ch = tpshare.Channel()
    sub.put("ch", ch)
    ch.send(buf)
    sub.run("b = ch.recv(); t = type(b).__name__; memoryview(b)[5:8] = b'!!!'")
    assert sub.eval("t") == "'Buffer'"
    assert bytes(buf)[:8] == b"hello!!!"
    assert buf.refs == 2  # ours and the subinterpreter's
    assert tpshare.stats()[tpshare.interpreter_id()]["exports"] == 0  # no export at all


def test_buffer_outlives_the_interpreter_that_made_it():
    from support import Sub

    mc = tpshare.MemChannel()
    with Sub() as s:
        s.put("mc", mc)
        s.run("b = tpshare.Buffer(1 << 20); memoryview(b)[:4] = b'made'; tr = mc.send(b)")
        mv = mc.recv()
    # The creator is gone; the memory is not.
    assert bytes(mv[:4]) == b"made" and mv.nbytes == 1 << 20
    mv[4:8] = b"here"  # writable: it is nobody's
    assert bytes(mv[:8]) == b"madehere"
    mv.release()


def test_destroying_a_memchannel_releases_in_the_owner(sub):
    sub.run("own = bytearray(b'queued'); mc = tpshare.MemChannel(); tr = mc.send(own)")
    sub.run("del mc")
    gc.collect()
    assert sub.eval("tr.released") == "True"
    sub.run("own.append(1)")
