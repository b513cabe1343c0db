"""The Object Channel: every shareable kind crosses, identity across
messages (D9), the pickle fallback, PEP 734's Queue API."""

import gc
import queue
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpshare
import tpshare_testext as ext
from strategies import same, values


@pytest.fixture
def echo(shared_sub):
    """A Channel pair to a subinterpreter that echoes what it receives."""
    shared_sub.run("import tpshare_testext")
    to_sub, from_sub = tpshare.Channel(), tpshare.Channel()
    shared_sub.put("to_sub", to_sub)
    shared_sub.put("from_sub", from_sub)

    def round_trip(v):
        to_sub.send(v)
        shared_sub.run("from_sub.send(to_sub.recv())")
        return from_sub.recv(timeout=5)

    yield round_trip
    shared_sub.run("del to_sub, from_sub")


@given(values)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_value_echoes_back_equal_and_of_the_same_type(echo, value):
    assert same(value, echo(value))


def test_every_kind_crosses(echo):
    buf = tpshare.Buffer(8)
    ch = tpshare.Channel()
    items = [
        None, True, 2**300, -1.5, 3j, "s\u20ac", b"bytes", (1, (2, "x")),
        ext.Matrix(1, 2, [1, 2]), ext.Point(1, 2), buf, ch,
    ]
    got = echo(tuple(items))
    assert got[:8] == tuple(items[:8])
    assert type(got[8]) is ext.Matrix and got[8] == items[8]
    assert got[9] == ext.Point(1, 2)
    assert type(got[10]) is tpshare.Buffer and got[10].nbytes == 8
    assert type(got[11]) is tpshare.Channel and got[11] == ch


def test_buffers_arrive_as_zero_copy_views(echo):
    ba = bytearray(b"zero-copy")
    mv = echo(ba)  # main -> sub -> main: a view of a view of ba
    ba[0:4] = b"ZERO"
    assert bytes(mv) == b"ZERO-copy"
    mv.release()
    gc.collect()
    tpshare.drain()


def test_same_object_twice_is_one_object_while_held(sub):
    ch = tpshare.Channel(identity=True)
    sub.put("ch", ch)
    t = ("identity", 2**100, "x" * 50)
    ch.send(t)
    ch.send(t)
    ch.send(("identity", 2**100, "x" * 50))  # equal, not the same object
    sub.run("a = ch.recv(); b = ch.recv(); c = ch.recv()")
    assert sub.eval("(a is b, a is c, a == c)") == "(True, False, True)"
    assert sub.eval("tpshare.origin_id(a)") == str(id(t))
    assert sub.eval("tpshare.origin_id(c)") != str(id(t))
    assert sub.eval("tpshare.origin_id(object())") == "None"


def test_identity_across_messages_is_opt_in():
    ch = tpshare.Channel()
    t = ("no identity", 2**100)
    ch.send(t)
    ch.send(t)
    a, b = ch.recv(), ch.recv()
    assert a == b and a is not b
    assert tpshare.origin_id(a) is None


def test_mutable_values_are_not_reused(sub):
    """A receiver must see the sender's changes: values that may change
    (buffers, registered types without TPSHARE_IMMUTABLE) are rebuilt."""
    ch = tpshare.Channel()
    sub.put("ch", ch)
    sub.run("import tpshare_testext")
    m = ext.Matrix(1, 1, [1.0])
    ch.send(m)
    ch.send(m)
    sub.run("a = ch.recv(); b = ch.recv()")
    assert sub.eval("a is b") == "False"


def test_identity_is_never_stale_after_address_reuse(sub):
    """The sender's object dies and a new object takes its address: the
    receiver must get the new value, never the old object."""
    ch = tpshare.Channel(identity=True)
    sub.put("ch", ch)
    reused = 0
    for round_ in range(20):
        obj = ("round", round_, 2**100 + round_)
        addr = id(obj)
        ch.send(obj)
        sub.run("held = ch.recv()")  # the receiver holds it
        # Push it out of the sender's identity ring, then let it die.
        ch.send_many([("filler", i, 0) for i in range(1100)])
        sub.run("ch.recv_many(2000)")
        del obj
        new = ("new!!", round_, 2**100 - round_)  # same shape: same memory
        reused += id(new) == addr
        ch.send(new)
        sub.run("fresh = ch.recv()")
        assert sub.eval("fresh") == repr(new)
        assert sub.eval("fresh is held") == "False"
    assert reused > 0, "the test never reproduced an address reuse"


def test_identity_keeps_little_memory_alive():
    """The identity tables are bounded in count and bytes: a stream of
    large distinct strings does not stay allocated."""
    import gc

    from support import SANITIZED, rss_kib

    ch = tpshare.Channel(identity=True)
    for i in range(50):  # warm up the allocators
        ch.send(str(i) * 20_000)
        ch.recv()
    gc.collect()
    before = rss_kib()
    for i in range(2048):
        ch.send(("%06d" % i) * 10_000)  # 60 KB each, 120 MB in all
        ch.recv()
    gc.collect()
    if not SANITIZED:
        assert rss_kib() - before < 40_000
    t = ("after", 1)
    ch.send(t)
    ch.send(t)
    assert ch.recv() is ch.recv()  # identity still works
    big = "x" * 100_000  # over the per-object limit: not tracked
    ch.send(big)
    ch.send(big)
    assert ch.recv() is not ch.recv()


def test_pickle_fallback_is_opt_in_and_a_copy(sub):
    ch = tpshare.Channel()
    with pytest.raises(tpshare.NotShareableError, match="dict"):
        ch.send({"a": 1})
    assert ch.qsize() == 0
    pk = tpshare.Channel(fallback="pickle")
    sub.put("pk", pk)
    d = {"a": [1, 2], "b": {3}}
    pk.send(d)
    pk.send((1, 2))  # shareable values still go natively
    sub.run("d = pk.recv(); t = pk.recv()")
    assert sub.eval("d") == repr(d)
    with pytest.raises(ValueError, match="fallback"):
        tpshare.Channel(fallback="json")
    with pytest.raises(TypeError):
        tpshare.MemChannel(fallback="pickle")


def test_pickle_fallback_reports_unpicklable_objects():
    pk = tpshare.Channel(fallback="pickle")
    with pytest.raises(Exception) as info:
        pk.send(lambda: 1)
    assert isinstance(info.value.__context__, tpshare.NotShareableError)
    assert pk.qsize() == 0


def test_queue_has_the_pep_734_api(sub):
    q = tpshare.Queue(maxsize=2)
    assert q.maxsize == 2 and q.empty() and not q.full() and q.qsize() == 0
    q.put([1, 2])  # pickled by default, like the standard queues
    q.put_nowait("two")
    assert q.full()
    with pytest.raises(tpshare.QueueFull):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    assert q.get() == [1, 2] and q.get_nowait() == "two"
    with pytest.raises(tpshare.QueueEmpty):
        q.get_nowait()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)  # a float timeout, honoured
    assert time.monotonic() - start >= 0.19
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    sub.put("q", q)
    sub.run("q.put(('from', tpshare.interpreter_id()))")
    assert q.get(timeout=5) == ("from", int(sub.id))
    assert issubclass(tpshare.QueueEmpty, tpshare.ChannelEmpty)


def test_queue_blocks_in_parallel_threads():
    q = tpshare.Queue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    time.sleep(0.05)
    q.put("wake")
    t.join(5)
    assert got == ["wake"]


def test_not_shareable_leaves_the_object_untouched():
    ch = tpshare.Channel()
    lst = [1, 2]
    t = (1, lst)
    import sys

    before = sys.getrefcount(lst), sys.getrefcount(t)
    with pytest.raises(tpshare.NotShareableError, match=r"tuple\[1\]"):
        ch.send(t)
    assert (sys.getrefcount(lst), sys.getrefcount(t)) == before
    assert ch.qsize() == 0 and lst == [1, 2]
