"""Items whose sender ended before they were received: immutable values
are delivered as copies, whatever their size; views of the sender's memory
follow the channel's unbounditems policy (PEP 734's names)."""

import threading

import pytest

import tpshare
from support import run_child

POLICIES = [tpshare.UNBOUND, tpshare.UNBOUND_ERROR, tpshare.UNBOUND_REMOVE]
ZERO = {"exports": 0, "remote": 0, "pending": 0}


def _counters_settled(sid):
    stats = tpshare.stats()
    assert sid not in stats
    assert stats[tpshare.interpreter_id()] == ZERO


def test_immutable_items_arrive_whatever_their_size(sub):
    """bytes below and above the size from which they are shared rather
    than copied, a tuple holding large bytes, a 10 KiB pickle and a str
    large enough to be shared: all arrive, in order, after their sender
    ended."""
    assert tpshare._tpshare._bytes_threshold() == 3072
    ch = tpshare.Channel(fallback="pickle")
    sub.put("ch", ch)
    sub.run(
        """
        ch.send(b'a' * 3071)
        ch.send(b'b' * 3072)
        ch.send(bytes(range(256)) * 4096)
        ch.send(('tuple', b'c' * 8192, 7))
        ch.send({'pickled': 'p' * 10240})
        ch.send('s' * 5000)
        ch.send('last')
        """
    )
    sid = int(sub.id)
    # Owner-bound: the bytes of 3 KiB (the share threshold) and more, the
    # tuple and the bytes in it, the pickle, the str of 3 KiB and more.
    assert tpshare.stats()[sid]["exports"] == 6
    sub.close()
    assert ch.stats()["dropped"] == 0
    assert ch.recv(timeout=0) == b"a" * 3071
    assert ch.recv(timeout=0) == b"b" * 3072
    assert ch.recv(timeout=0) == bytes(range(256)) * 4096
    assert ch.recv(timeout=0) == ("tuple", b"c" * 8192, 7)
    assert ch.recv(timeout=0) == {"pickled": "p" * 10240}
    assert ch.recv(timeout=0) == "s" * 5000
    assert ch.recv(timeout=0) == "last"
    assert ch.qsize() == 0
    _counters_settled(sid)


def test_queue_delivers_large_pickles_of_an_ended_sender(sub):
    q = tpshare.Queue()
    sub.put("q", q)
    sub.run("q.put(list(range(5000))); q.put_nowait(b'x' * 100_000)")
    sub.close()
    assert q.get(timeout=0) == list(range(5000))
    assert q.get(timeout=0) == b"x" * 100_000


def _send_views(sub, handle, kind, **send_kw):
    """sub sends 'before', a view of its memory, 'after' through handle."""
    sub.put("h", handle)
    neutral = "tpshare.Buffer(3)" if kind == "mem" else "'before'"
    after = "tpshare.Buffer(5)" if kind == "mem" else "'after'"
    kw = ", ".join(f"{k}={v!r}" for k, v in send_kw.items())
    sub.run(
        f"""
        own = bytearray(b'memory of the sub')
        h.send({neutral})
        h.send(own{', ' + kw if kw else ''})
        h.send({after})
        """
    )


def _first_and_last(kind, first, last):
    if kind == "mem":
        assert (len(first), len(last)) == (3, 5)
    else:
        assert (first, last) == ("before", "after")


@pytest.mark.parametrize("kind", ["channel", "mem"])
@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_views_of_an_ended_sender_follow_unbounditems(sub, kind, policy):
    cls = tpshare.MemChannel if kind == "mem" else tpshare.Channel
    h = cls(unbounditems=policy)
    assert h.unbounditems is policy
    _send_views(sub, h, kind)
    assert sub.eval("h.unbounditems") == repr(policy)
    sid = int(sub.id)
    sub.close()
    first = h.recv(timeout=0)
    if policy is tpshare.UNBOUND:
        assert h.recv(timeout=0) is tpshare.UNBOUND
    elif policy is tpshare.UNBOUND_ERROR:
        with pytest.raises(tpshare.ItemInterpreterDestroyed):
            h.recv(timeout=0)
    last = h.recv(timeout=0)  # the failed recv consumed its item
    _first_and_last(kind, first, last)
    assert h.qsize() == 0
    removed = policy is tpshare.UNBOUND_REMOVE
    assert h.stats()["dropped"] == removed
    assert h.stats()["received"] == 3 - removed
    _counters_settled(sid)


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_unbounditems_per_send_overrides_the_channel(sub, policy):
    others = [p for p in POLICIES if p is not policy]
    ch = tpshare.Channel(unbounditems=others[0])
    _send_views(sub, ch, "channel", unbounditems=policy)
    sub.close()
    got = []
    while ch.qsize():
        try:
            got.append(ch.recv(timeout=0))
        except tpshare.ItemInterpreterDestroyed:
            got.append("raised")
    expected = {
        tpshare.UNBOUND: ["before", tpshare.UNBOUND, "after"],
        tpshare.UNBOUND_ERROR: ["before", "raised", "after"],
        tpshare.UNBOUND_REMOVE: ["before", "after"],
    }[policy]
    assert got == expected


def test_queue_put_takes_unbounditems(sub):
    q = tpshare.Queue(unbounditems=tpshare.UNBOUND_REMOVE)
    assert q.unbounditems is tpshare.UNBOUND_REMOVE
    sub.put("q", q)
    sub.run(
        """
        own = bytearray(b'memory of the sub')
        q.put(own, unbounditems=tpshare.UNBOUND_ERROR)
        q.put_nowait(own, unbounditems=tpshare.UNBOUND)
        q.put(own)
        q.put('end', True, None, unbounditems=None)
        """
    )
    sub.close()
    with pytest.raises(tpshare.ItemInterpreterDestroyed):
        q.get(timeout=0)
    assert q.get_nowait() is tpshare.UNBOUND
    assert q.get_nowait() == "end"
    assert q.qsize() == 0


def test_recv_many_stops_before_an_unbound_error(sub):
    ch = tpshare.Channel(unbounditems=tpshare.UNBOUND_ERROR)
    _send_views(sub, ch, "channel")
    sub.close()
    assert ch.recv_many(10, timeout=0) == ["before"]
    with pytest.raises(tpshare.ItemInterpreterDestroyed):
        ch.recv_many(10, timeout=0)
    assert ch.recv_many(10, timeout=0) == ["after"]


def test_unbound_markers_keep_their_identity():
    import copy
    import pickle

    for marker in POLICIES:
        assert pickle.loads(pickle.dumps(marker)) is marker
        assert copy.deepcopy(marker) is marker
    q = tpshare.Queue()
    q.put(tpshare.UNBOUND)  # pickled: the receiver's own marker
    assert q.get() is tpshare.UNBOUND
    with pytest.raises(TypeError):
        type(tpshare.UNBOUND)()
    assert issubclass(tpshare.ItemInterpreterDestroyed, tpshare.Error)


@pytest.mark.parametrize("bad", ["UNBOUND", 1, object(), tpshare.Channel])
def test_bad_unbounditems_are_refused(bad):
    with pytest.raises(TypeError, match="unbounditems must be"):
        tpshare.Channel(unbounditems=bad)
    with pytest.raises(TypeError, match="unbounditems must be"):
        tpshare.MemChannel(unbounditems=bad)
    with pytest.raises(TypeError, match="unbounditems must be"):
        tpshare.Queue(unbounditems=bad)
    ch, q = tpshare.Channel(), tpshare.Queue()
    with pytest.raises(TypeError, match="unbounditems must be"):
        ch.send(1, unbounditems=bad)
    with pytest.raises(TypeError, match="unbounditems must be"):
        ch.send_many([1], unbounditems=bad)
    with pytest.raises(TypeError, match="unbounditems must be"):
        q.put(1, unbounditems=bad)
    with pytest.raises(TypeError, match="unbounditems must be"):
        q.put_nowait(1, unbounditems=bad)
    assert ch.qsize() == 0 and q.qsize() == 0
    assert tpshare.Channel(unbounditems=None).unbounditems is tpshare.UNBOUND


def test_no_item_lost_or_duplicated_while_others_send_and_receive(sub):
    """The sender ends while a thread here receives and another sends:
    every item arrives once, the sender's in their order, its large bytes
    as copies."""
    n = 3000
    ch = tpshare.Channel()
    sub.put("ch", ch)
    sub.run(
        f"""
        for i in range({n}):
            ch.send((i, bytes([i % 256]) * (5000 if i % 2 else 10)))
        """
    )
    got, mine = [], []
    stop = threading.Event()

    def receive():
        while True:
            item = ch.recv(timeout=10)
            if item is None:
                return
            got.append(item)

    def send():
        i = 0
        while not stop.is_set():
            ch.send(("main", i))
            i += 1
        mine.append(i)

    threads = [threading.Thread(target=receive), threading.Thread(target=send)]
    for t in threads:
        t.start()
    sid = int(sub.id)
    sub.close()
    stop.set()
    threads[1].join()
    ch.send(None)
    threads[0].join()
    from_sub = [item for item in got if item[0] != "main"]
    from_main = [item[1] for item in got if item[0] == "main"]
    assert [i for i, _ in from_sub] == list(range(n))
    assert all(b == bytes([i % 256]) * (5000 if i % 2 else 10) for i, b in from_sub)
    assert from_main == list(range(mine[0]))
    assert ch.stats()["dropped"] == 0
    _counters_settled(sid)


def test_sender_ends_with_many_items_queued_in_a_child():
    """Many rounds of a sender ending with large bytes, pickles and views
    queued while threads receive them: every value intact (views read
    before the sender could end, UNBOUND after), in a child process."""
    r = run_child(
        """
        import threading
        import tpshare
        from support import Sub

        for rnd in range(30):
            ch = tpshare.Channel(fallback="pickle")
            sub = Sub()
            sub.put("ch", ch)
            sub.run(f'''
                own = bytearray(b'view %d' % {rnd})
                for i in range(40):
                    ch.send((i, bytes([i]) * 6000))
                    ch.send(own)
                    ch.send({{'i': i, 'pad': 'p' * 5000}})
            ''')
            seen = []

            def receive():
                while True:
                    item = ch.recv(timeout=30)
                    if item is None:
                        return
                    if isinstance(item, memoryview):
                        item = ('view', item.tobytes())  # then released
                    seen.append(item)

            threads = [threading.Thread(target=receive) for _ in range(2)]
            for t in threads:
                t.start()
            sid = int(sub.id)
            sub.close()
            ch.send(None)
            ch.send(None)
            for t in threads:
                t.join()
            assert len(seen) == 120, len(seen)
            tuples = sorted(x for x in seen if isinstance(x, tuple) and x[0] != 'view')
            assert tuples == [(i, bytes([i]) * 6000) for i in range(40)]
            dicts = sorted((d['i'], d['pad']) for d in seen if isinstance(d, dict))
            assert dicts == [(i, 'p' * 5000) for i in range(40)]
            views = [x for x in seen if isinstance(x, tuple) and x[0] == 'view']
            unbound = [x for x in seen if x is tpshare.UNBOUND]
            assert len(views) + len(unbound) == 40
            assert all(v == ('view', b'view %d' % rnd) for v in views)
            assert sid not in tpshare.stats()
        assert all(v == {"exports": 0, "remote": 0, "pending": 0}
                   for v in tpshare.stats().values()), tpshare.stats()
        print("OK")
        """,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
