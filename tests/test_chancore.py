"""The channel core, through both channel kinds: FIFO order, capacity,
real blocking with float timeouts, close, destroy, interpreters dying."""

import gc
import math
import queue
import threading
import time

import pytest

import tpshare
from support import run_child
from tpshare.bench import _probes

KINDS = [tpshare.Channel, tpshare.MemChannel]


def item(kind, i):
    return i if kind is tpshare.Channel else bytes([i % 256]) * 8


def value(kind, got):
    if kind is tpshare.Channel:
        return got
    v = got[0]
    got.release()
    return v


@pytest.mark.parametrize("kind", KINDS)
def test_fifo_order_and_counts(kind):
    ch = kind()
    for i in range(100):
        ch.send(item(kind, i))
    assert ch.qsize() == len(ch) == 100 and not ch.empty()
    assert [value(kind, ch.recv()) for _ in range(100)] == [item(kind, i) if kind is tpshare.Channel else i % 256 for i in range(100)]
    assert ch.empty()
    assert ch.stats() == {"sent": 100, "received": 100, "dropped": 0,
                          "queued": 0, "sends_parked": 0, "recvs_parked": 0}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), "1"])
def test_bad_timeouts_are_refused_and_queue_nothing(kind, bad):
    ch = kind()
    exc = TypeError if isinstance(bad, str) else ValueError
    with pytest.raises(exc):
        ch.send(item(kind, 1), timeout=bad)
    with pytest.raises(exc):
        ch.recv(timeout=bad)
    assert ch.qsize() == 0


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        tpshare.Channel(-1)
    with pytest.raises(TypeError):
        tpshare.Channel("3")
    with pytest.raises(ValueError):
        tpshare.Channel(spin=-1)
    with pytest.raises(TypeError):
        tpshare.Channel().send(1, writable=True)


@pytest.mark.parametrize("kind", KINDS)
def test_float_timeouts_are_honoured(kind):
    ch = kind(maxsize=1)
    start = time.monotonic()
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv(timeout=0.25)
    took = time.monotonic() - start
    assert 0.24 <= took < 1.0  # CPython's queue truncates 0.25 to 0
    ch.send(item(kind, 1))
    start = time.monotonic()
    with pytest.raises(tpshare.ChannelFull):
        ch.send(item(kind, 2), timeout=0.1)
    assert 0.09 <= time.monotonic() - start < 1.0
    assert ch.qsize() == 1  # the failed send queued nothing


def test_errors_are_queue_errors():
    assert issubclass(tpshare.ChannelEmpty, queue.Empty)
    assert issubclass(tpshare.ChannelFull, queue.Full)
    for e in (tpshare.ChannelEmpty, tpshare.ChannelFull, tpshare.ChannelClosed):
        assert issubclass(e, tpshare.Error)


def test_recv_really_blocks_until_a_send():
    ch = tpshare.Channel()
    threading.Timer(0.2, ch.send, args=("late",)).start()
    start = time.monotonic()
    assert ch.recv(timeout=5) == "late"
    assert 0.15 <= time.monotonic() - start < 2
    # The wait outlasted its spin and parked (a timed-out one parks too).
    assert ch.stats()["recvs_parked"] >= 1
    assert ch.stats()["sends_parked"] == 0


def test_one_send_wakes_parked_receivers_of_two_interpreters():
    """A send that posts parked receivers of its own interpreter and of
    another (the second is handed the sender's CPU) delivers one item to
    each; a later send finds no one parked and wakes no one."""
    from support import Sub
    ch = tpshare.Channel()
    got = []
    with Sub() as sub:
        sub.run(f"""
            import threading
            ch = tpshare.Channel.from_id({ch.id})
            got = []
            t = threading.Thread(target=lambda: got.append(ch.recv(timeout=60)))
            t.start()
        """)
        here = threading.Thread(target=lambda: got.append(ch.recv(timeout=60)))
        here.start()
        deadline = time.monotonic() + 60
        while ch.stats()["recvs_parked"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ch.stats()["recvs_parked"] >= 2
        ch.send_many(["a", "b"])
        here.join(60)
        sub.run("t.join(60)")
        there = sub.eval("got")
    assert sorted(got + eval(there)) == ["a", "b"]
    assert len(got) == 1
    parked = ch.stats()["recvs_parked"]
    ch.send("c")
    assert ch.recv(timeout=0) == "c"
    st = ch.stats()
    assert (st["sent"], st["received"], st["recvs_parked"]) == (3, 3, parked)


def test_send_blocks_while_full_then_resumes():
    ch = tpshare.Channel(maxsize=2)
    ch.send(1)
    ch.send(2)
    done = []
    t = threading.Thread(target=lambda: done.append(ch.send(3, timeout=5)))
    t.start()
    time.sleep(0.1)
    assert not done and ch.qsize() == 2
    assert ch.recv() == 1
    t.join(5)
    assert done == [None]
    assert [ch.recv(), ch.recv()] == [2, 3]
    assert ch.stats()["sends_parked"] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_close_wakes_all_waiters_and_drains(kind):
    ch = kind()
    results = []

    def waiter():
        try:
            ch.recv(timeout=10)
        except tpshare.ChannelClosed:
            results.append("closed")

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    ch.close()
    for t in threads:
        t.join(5)
    assert results == ["closed"] * 3
    assert ch.closed


def test_close_keeps_queued_items_receivable():
    ch = tpshare.Channel()
    ch.send("a")
    ch.send("b")
    ch.close()
    with pytest.raises(tpshare.ChannelClosed):
        ch.send("c")
    assert ch.recv() == "a" and ch.recv(timeout=0) == "b"
    with pytest.raises(tpshare.ChannelClosed):
        ch.recv()
    with pytest.raises(tpshare.ChannelClosed):
        ch.recv(timeout=0)


def test_full_sender_woken_by_close():
    ch = tpshare.Channel(maxsize=1)
    ch.send(1)
    out = []

    def sender():
        try:
            ch.send(2)
        except tpshare.ChannelClosed:
            out.append("closed")

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(0.1)
    ch.close()
    t.join(5)
    assert out == ["closed"]


def test_destroying_a_channel_releases_unreceived_items():
    ba = bytearray(b"queued and forgotten")
    ch = tpshare.MemChannel()
    tracker = ch.send(ba)
    ch2 = tpshare.Channel()
    ch2.send((1, ba))  # the Object Channel shares buffers too
    with pytest.raises(BufferError):
        ba.append(1)
    del ch, ch2
    gc.collect()
    assert tracker.released
    ba.append(1)


def test_channels_cross_interpreters_and_live_while_held(sub):
    ch = tpshare.Channel()
    sub.put("ch", ch)
    assert sub.eval("ch.id") == str(ch.id)
    assert sub.eval("type(ch) is tpshare.Channel") == "True"
    sub.run("ch.send(('from sub', tpshare.interpreter_id()))")
    assert ch.recv() == ("from sub", int(sub.id))
    cid = ch.id
    del ch
    gc.collect()
    # The subinterpreter's handle keeps the channel alive.
    again = tpshare.Channel.from_id(cid)
    sub.run("ch.send('still here'); del ch")
    assert again.recv() == "still here"
    del again
    gc.collect()
    with pytest.raises(KeyError):
        tpshare.Channel.from_id(cid)


def test_send_many_and_recv_many():
    ch = tpshare.Channel()
    ch.send_many(range(10))
    assert ch.recv_many(4) == [0, 1, 2, 3]
    assert ch.recv_many(100) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv_many(5, timeout=0.01)
    with pytest.raises(ValueError):
        ch.recv_many(0)


def test_send_many_is_all_or_nothing():
    ch = tpshare.Channel()
    with pytest.raises(tpshare.NotShareableError, match="list"):
        ch.send_many([1, 2, [3], 4])
    assert ch.qsize() == 0
    ch2 = tpshare.Channel(maxsize=3)
    ch2.send(0)
    with pytest.raises(tpshare.ChannelFull):
        ch2.send_many([1, 2, 3], timeout=0.05)
    assert ch2.qsize() == 1


def test_a_batch_larger_than_the_capacity_enters_an_empty_channel():
    ch = tpshare.Channel(maxsize=2)
    ch.send_many([1, 2, 3, 4])
    assert ch.recv_many(10) == [1, 2, 3, 4]


def test_unrebuildable_item_is_consumed_and_raises_once(sub):
    """A receiver without the registration gets LookupError once; the
    item is gone (released in its owner) and the next one arrives."""
    import tpshare_testext as ext

    ch = tpshare.Channel()
    sub.put("ch", ch)
    # Owner-bound (the large bytes): released through the sender's list.
    ch.send((bytes(8192), ext.Matrix(1, 1, [2.0])))
    ch.send("next")
    sub.run(
        """
        try:
            ch.recv()
        except LookupError:
            failed = True
        """
    )
    assert sub.eval("failed") == "True"
    assert ch.qsize() == 1
    sub.run("n = ch.recv()")
    assert sub.eval("n") == "'next'"
    sub.run("import tpshare_testext as ext; ch.send(ext.Matrix(1, 1, [3.0]))")
    sub.run("m = ch.recv()")  # with the registration it rebuilds
    assert sub.eval("m.tolist()") == "[[3.0]]"
    tpshare.drain()
    assert tpshare.stats()[tpshare.interpreter_id()]["exports"] == 0


def test_ctrl_c_interrupts_a_blocked_recv_promptly():
    r = run_child(
        """
        import os, signal, threading, time
        import tpshare
        ch = tpshare.Channel()
        threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            ch.recv()
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - start, 2))
        """
    )
    assert r.returncode == 0, r.stderr
    took = float(r.stdout.split()[-1])
    assert 0.25 <= took < 1.0


def test_items_of_an_exited_sender(sub):
    """Policy: when the sending interpreter exits, its items still queued
    that are views of its memory are released in it, and tpshare.UNBOUND
    (the default unbounditems) takes their place; neutral items stay
    deliverable, in order."""
    ch = tpshare.Channel()
    mc = tpshare.MemChannel()
    sub.put("ch", ch)
    sub.put("mc", mc)
    sub.run(
        """
        own = bytearray(b'dies with the sub')
        ch.send(('neutral', 2**80))
        ch.send(own)
        mc.send(own)
        ch.send('after')
        """
    )
    assert ch.qsize() == 3 and mc.qsize() == 1
    sub.close()
    assert ch.stats()["dropped"] == 0 and mc.stats()["dropped"] == 0
    assert ch.recv() == ("neutral", 2**80)
    assert ch.recv() is tpshare.UNBOUND
    assert ch.recv() == "after"
    assert mc.recv() is tpshare.UNBOUND
    assert ch.qsize() == 0 and mc.qsize() == 0


def _view_of_sub_memory(sub):
    """A MemChannel view here of a bytearray of sub's (sub keeps the
    tracker as `tr`), and a Channel bound as `ch` in sub.  Returns
    (ch, sub's interpreter ID, the view)."""
    mc, ch = tpshare.MemChannel(), tpshare.Channel()
    sub.put("mc", mc)
    sub.put("ch", ch)
    sub.run("own = bytearray(b'sub memory'); tr = mc.send(own)")
    return ch, int(sub.id), mc.recv()


def test_waiting_receiver_drains_its_releases(sub):
    """A thread parked in recv is a watcher of its interpreter: a release
    requested by another interpreter runs (after the grace period in which
    a running thread of the owner could have done it), although the owner
    runs no bytecode and makes no call."""
    ch, sid, mv = _view_of_sub_memory(sub)
    parked = threading.Thread(target=sub.run, args=("got = ch.recv(timeout=10)",))
    parked.start()
    time.sleep(0.2)  # the subinterpreter is now parked in recv
    assert tpshare.stats()[sid]["exports"] == 1
    mv.release()
    deadline = time.monotonic() + 2
    while tpshare.stats()[sid]["exports"] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert tpshare.stats()[sid] == {"exports": 0, "remote": 0, "pending": 0}
    assert parked.is_alive()  # still waiting: the release woke it, not an item
    ch.send("done")
    parked.join(5)
    assert sub.eval("(got, tr.released)") == "('done', True)"


def test_a_thread_can_leave_draining_to_its_interpreter_s_others(sub):
    """_parked_drains(False) (tpshare.Interpreter's result collector):
    the parked thread is not woken for releases; they wait, counted as
    pending, until the interpreter next enters tpshare."""
    ch, sid, mv = _view_of_sub_memory(sub)
    parked = threading.Thread(target=sub.run, args=(
        "from tpshare import _tpshare\n"
        "before = _tpshare._parked_drains(False)\n"
        "got = ch.recv(timeout=10)\n"
        "after = _tpshare._parked_drains(before)\n",))
    parked.start()
    time.sleep(0.2)  # parked in recv
    mv.release()
    time.sleep(0.3)  # far beyond the grace period of a draining thread
    assert tpshare.stats()[sid] == {"exports": 1, "remote": 0, "pending": 1}
    assert parked.is_alive()
    ch.send("done")
    parked.join(5)
    assert sub.eval("(got, before, after)") == "('done', True, False)"
    # The next entry into tpshare drains: the tracker fires.
    assert sub.eval("tr.released") == "True"
    assert tpshare.stats()[sid] == {"exports": 0, "remote": 0, "pending": 0}


def test_a_thread_that_leaves_draining_still_times_out():
    """With _parked_drains(False) a timed wait still ends at its deadline
    (it parks with the caller's deadline, not forever)."""
    ch = tpshare.Channel()
    outcome = []

    def wait():
        before = tpshare._tpshare._parked_drains(False)
        try:
            ch.recv(timeout=0.2)
        except tpshare.ChannelEmpty:
            outcome.append("empty")
        except tpshare.ChannelClosed:
            outcome.append("closed")
        finally:
            tpshare._tpshare._parked_drains(before)

    t = threading.Thread(target=wait)
    t.start()
    t.join(10)
    if t.is_alive():
        ch.close()   # let the thread go before failing
        t.join(10)
    assert outcome == ["empty"]
    assert ch.qsize() == 0


def test_parked_drains_rejects_what_has_no_truth_value():
    class NoBool:
        def __bool__(self):
            raise RuntimeError("no truth value")

    with pytest.raises(RuntimeError, match="no truth value"):
        tpshare._tpshare._parked_drains(NoBool())
    assert tpshare._tpshare._parked_drains(True) is True   # unchanged


@pytest.mark.parametrize("args, exc", [
    ((), TypeError),
    ((10,), TypeError),
    ((10, 0.0, 1), TypeError),
    (("10", 0.0), TypeError),
    ((10, "0"), TypeError),
    ((0, 0.0), ValueError),
    ((10, -0.001), ValueError),
    ((10, float("nan")), ValueError),
    ((10, 2.0), ValueError),
])
def test_wake_floor_rejects_bad_arguments(args, exc):
    with pytest.raises(exc):
        _probes._wake_floor(*args)


def test_wake_floor_measures_every_wake_up():
    got = _probes._wake_floor(20, 0.0001)
    assert len(got) == 20
    assert all(isinstance(x, int) and 0 < x < 10**9 for x in got)
