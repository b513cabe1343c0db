"""The Object Channel: every shareable kind crosses, identity across
messages, the pickle fallback, PEP 734's Queue API."""

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

# bytes and str from this many bytes of data are shared, not copied.
SHARE_MIN = tpshare._tpshare._bytes_threshold()


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


# --- An item that cannot be rebuilt: consumed, its error raised once. ---

REBUILDS = []


def _rebuild_poison(tag, exc_type, pad):
    REBUILDS.append(tag)
    raise exc_type("poison " + tag)


class Poison:
    """Pickles fine; unpickling it counts the call, then raises exc_type.
    Its pickle is large enough to be shared owner-bound, so that a record
    left unreleased shows in the sender's exports."""

    def __init__(self, tag, exc_type=RuntimeError):
        self.tag, self.exc_type = tag, exc_type

    def __reduce__(self):
        return (_rebuild_poison, (self.tag, self.exc_type, b"p" * 8192))


class Grab(Exception):
    """An exception the test can reach after recv_many() kept it."""

    caught = []

    def __init__(self, *args):
        super().__init__(*args)
        Grab.caught.append(self)


@pytest.fixture
def rebuilds():
    REBUILDS.clear()
    yield REBUILDS
    REBUILDS.clear()


def exports():
    gc.collect()
    tpshare.drain()
    return tpshare.stats()[tpshare.interpreter_id()]["exports"]


def test_recv_consumes_an_item_it_cannot_rebuild(rebuilds):
    ch = tpshare.Channel(fallback="pickle")
    ch.send("before")
    ch.send(Poison("recv"))
    ch.send("after")
    assert exports() == 1  # the poison item's record
    assert ch.recv() == "before"
    with pytest.raises(RuntimeError, match="poison recv"):
        ch.recv()
    assert exports() == 0  # released at once
    assert ch.recv(timeout=0) == "after"
    assert rebuilds == ["recv"]  # the unpickler ran once
    assert ch.qsize() == 0 and ch.stats()["received"] == 3
    # A rebuild hook that raises (a registered type) is no different.
    ch.send_many([ext.BadRebuildRaise(), "next"])
    with pytest.raises(RuntimeError, match="cannot rebuild"):
        ch.recv()
    assert ch.recv(timeout=0) == "next"


def test_queue_get_consumes_an_item_it_cannot_rebuild(rebuilds):
    q = tpshare.Queue()
    q.put(1)
    q.put(Poison("get"))
    q.put(2)
    assert q.get() == 1
    with pytest.raises(RuntimeError, match="poison get"):
        q.get()
    assert q.get_nowait() == 2
    assert rebuilds == ["get"]
    assert q.empty() and exports() == 0


def test_recv_many_returns_what_precedes_an_item_it_cannot_rebuild(rebuilds):
    """The items before it are returned; its error is raised by the next
    receive on the handle; the items behind it go back to the head of the
    channel, in order, for any receiver."""
    ch = tpshare.Channel(fallback="pickle")
    ch.send_many(["a", "b", Poison("many"), "c", "d", "e"])
    assert ch.recv_many(10) == ["a", "b"]
    assert rebuilds == ["many"]
    assert ch.qsize() == 3 and exports() == 0
    other = tpshare.Channel.from_id(ch.id)  # another handle: no error
    assert other.recv(timeout=0) == "c"
    with pytest.raises(RuntimeError, match="poison many"):
        ch.recv_many(10)  # raised once, nothing taken
    assert ch.qsize() == 2
    assert ch.recv_many(10) == ["d", "e"]
    assert rebuilds == ["many"]
    # First in the batch: raised at once, the rest stay queued.
    ch.send_many([Poison("first"), "f", "g"])
    with pytest.raises(RuntimeError, match="poison first"):
        ch.recv_many(10)
    assert ch.qsize() == 2
    assert ch.recv() == "f"  # recv() after recv_many(), same handle
    # The error left by recv_many() is raised by recv() too.
    ch.send_many(["h", Poison("then recv"), "i"])
    assert ch.recv_many(10) == ["g", "h"]
    with pytest.raises(RuntimeError, match="poison then recv"):
        ch.recv()
    assert ch.recv() == "i"
    assert rebuilds == ["many", "first", "then recv"]
    assert ch.stats()["received"] == ch.stats()["sent"] == 12


def test_recv_many_returns_fewer_large_copies_and_keeps_the_rest(sub):
    """A batch of large items sent from another interpreter (shared, copied
    on receive) comes out a few at a time: a call stops once its copies
    reach 256 KiB, the rest stay queued in order; once the items are small
    again the calls take whole batches again."""
    ch = tpshare.Channel()
    sub.put("ch", ch)
    sub.run("ch.send_many([bytes([i]) * (200 << 10) for i in range(10)])")
    calls = []
    got = []
    while len(got) < 10:
        batch = ch.recv_many(10, timeout=5)
        calls.append(len(batch))
        got.extend(batch)
    # Two copies of 200 KiB reach the limit: two items a call.
    assert calls == [2, 2, 2, 2, 2]
    assert got == [bytes([i]) * (200 << 10) for i in range(10)]
    assert ch.qsize() == 0
    del got, batch
    assert exports() == 0
    sub.run("ch.send_many(list(range(100)))")
    got, calls = [], []
    while len(got) < 100:
        batch = ch.recv_many(100, timeout=5)
        calls.append(len(batch))
        got.extend(batch)
    assert got == list(range(100))
    # The limit on the count doubles while calls fill it...
    assert calls == [2, 4, 8, 16, 32, 38]
    sub.run("ch.send_many(list(range(100)))")
    assert ch.recv_many(100, timeout=5) == list(range(64))
    assert ch.recv_many(100, timeout=5) == list(range(64, 100))
    # ...until it is no limit.
    sub.run("ch.send_many(list(range(100)))")
    assert ch.recv_many(100, timeout=5) == list(range(100))
    assert ch.stats()["received"] == ch.stats()["sent"] == 310
    sub.run("del ch")


def test_recv_many_does_not_swallow_a_keyboard_interrupt(rebuilds):
    ch = tpshare.Channel(fallback="pickle")
    ch.send_many(["a", Poison("ki", KeyboardInterrupt), "b"])
    assert ch.recv_many(10) == ["a"]
    with pytest.raises(KeyboardInterrupt, match="poison ki"):
        ch.recv_many(10)
    assert rebuilds == ["ki"]  # raised once, not rebuilt again
    assert ch.recv_many(10) == ["b"]
    ch.send_many([Poison("ki first", KeyboardInterrupt), "c"])
    with pytest.raises(KeyboardInterrupt, match="poison ki first"):
        ch.recv_many(10)
    assert ch.recv_many(10) == ["c"]
    assert rebuilds == ["ki", "ki first"]
    assert exports() == 0


def test_an_error_left_on_a_dropped_handle_is_reported(rebuilds, monkeypatch):
    """Never silently lost: a handle that dies with an error pending
    passes it to sys.unraisablehook, also when it dies in a cycle with
    that error."""
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    ch = tpshare.Channel(fallback="pickle")
    ch.send_many(["a", Poison("dropped")])
    assert ch.recv_many(10) == ["a"]
    del ch
    assert [str(u.exc_value) for u in seen] == ["poison dropped"]

    ch = tpshare.Channel(fallback="pickle")
    ch.send_many(["b", Poison("cycle", Grab)])
    assert ch.recv_many(10) == ["b"]
    Grab.caught.pop().handle = ch  # handle -> error -> handle
    del ch
    gc.collect()
    assert [str(u.exc_value) for u in seen] == ["poison dropped",
                                                 "poison cycle"]


# --- Identity at the bytes threshold, and at any depth of a message. ---


@pytest.mark.parametrize("n", [SHARE_MIN - 1, SHARE_MIN, 64 * 1024 - 1])
def test_identity_holds_for_bytes_below_64_kib(sub, n):
    """Copied (below the share threshold) or shared owner-bound (from
    it), the same bytes object arrives as one object, alone or inside
    tuples."""
    ch = tpshare.Channel(identity=True)
    sub.put("ch", ch)
    b = bytes(range(256)) * (n // 256) + b"z" * (n % 256)
    assert len(b) == n
    ch.send(b)
    ch.send(b)
    ch.send((b, 1))
    ch.send(((b, 2), b))
    sub.run("x = ch.recv(); y = ch.recv(); t = ch.recv(); u = ch.recv()")
    assert sub.eval("(len(x), x is y, t[0] is x, u[0][0] is x, u[1] is x)") \
        == f"({n}, True, True, True, True)"
    assert sub.eval("tpshare.origin_id(x)") == str(id(b))
    del b
    sub.run("del x, y, t, u")
    assert exports() == 0


def test_identity_stops_at_64_kib():
    """The documented bound: data of 64 KiB or more is not tracked."""
    ch = tpshare.Channel(identity=True)
    b = bytes(64 * 1024)
    ch.send(b)
    ch.send(b)
    x, y = ch.recv(), ch.recv()
    assert x == y and x is not y
    t = (bytes(64 * 1024 - 1),)  # the tuple is over, its item is not
    ch.send(t)
    ch.send(t)
    x, y = ch.recv(), ch.recv()
    assert x == y and x is not y and x[0] is y[0]


def test_identity_holds_at_any_depth_of_a_message(sub):
    ch = tpshare.Channel(identity=True)
    sub.put("ch", ch)
    sub.run("import tpshare_testext")
    s = "nested first" * 5
    ch.send((s, s))
    ch.send(s)
    r = "alone first" * 5
    ch.send(r)
    ch.send((r, 1))
    ch.send(ext.Pair(r, 2))  # inside a registered (mutable) type too
    inner = ("inner", 2**70, b"i" * 5000)
    outer = ((inner, 1), inner)
    ch.send(outer)
    ch.send(inner)
    ch.send((inner,))
    ch.send(outer)
    sub.run(
        "a = ch.recv(); b = ch.recv(); c = ch.recv(); d = ch.recv(); "
        "p = ch.recv(); o = ch.recv(); i = ch.recv(); w = ch.recv(); "
        "o2 = ch.recv()"
    )
    assert sub.eval("(a[0] is a[1] is b, d[0] is c, p.a is c)") \
        == "(True, True, True)"
    assert sub.eval("(o[0][0] is o[1] is i is w[0], o2 is o)") \
        == "(True, True)"
    assert sub.eval("tpshare.origin_id(b)") == str(id(s))
    assert sub.eval("tpshare.origin_id(o[1])") == str(id(inner))
    assert sub.eval("tpshare.origin_id(i[1])") == str(id(inner[1]))


def test_nested_identity_is_never_stale_after_address_reuse(sub):
    """As test_identity_is_never_stale_after_address_reuse, with the
    objects inside tuples."""
    ch = tpshare.Channel(identity=True)
    sub.put("ch", ch)
    reused = 0
    for round_ in range(20):
        obj = ("round", round_, 2**100 + round_)
        addr = id(obj)
        ch.send((obj, 0))
        ch.send((1, obj))
        sub.run("held = ch.recv()[0]; again = ch.recv()[1]")
        assert sub.eval("again is held") == "True"  # tracked while held
        ch.send_many([("filler", i, 0) for i in range(1100)])
        sub.run("ch.recv_many(2000)")
        del obj
        new = ("new!!", round_, 2**100 - round_)
        reused += id(new) == addr
        ch.send((1, new))
        sub.run("fresh = ch.recv()[1]")
        assert sub.eval("fresh") == repr(new)
        assert sub.eval("fresh is held") == "False"
    assert reused > 0, "the test never reproduced an address reuse"


def test_identity_resumes_once_the_receiver_lets_go():
    """A receiver holding more tracked objects than its table takes gets
    no identity for new ones; once it lets go, identity works again."""
    ch = tpshare.Channel(identity=True)
    held = []
    for i in range(5000):
        ch.send(("held", i + 0.5))
        held.append(ch.recv())
    t = ("after", 2**80)
    del held
    ch.send(t)
    ch.send(t)
    assert ch.recv() is ch.recv()
