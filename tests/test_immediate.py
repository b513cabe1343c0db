"""Immediate items: in a Channel or Queue with identity off, exact ints of
63 bits, None, True and False travel in the ring's slot itself, and
exact floats, bytes and str of up to 120 bytes of payload in a compact
block of a small class, with no record.  Every value comes back equal, of its
exact type and (for str) of the same kind, at every boundary of the
encoding, through every path of the channel."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpshare
from tpshare import _tpshare

from support import run_child

# The payload a compact block holds at most (item.h, TPS_COMPACT_MAX).
LIMIT = 120

INTS = [
    0, 1, -1, 255, 256, -5, -6, 2**30, -(2**30), 2**31, 2**32,
    2**62 - 1, -(2**62),          # the largest and smallest immediate
    2**62, -(2**62) - 1,          # one past: records
    2**63 - 1, -(2**63), 2**63, 2**64, -(2**100),
]

TEXTS = [
    b"", b"x", b"x" * 64, b"\0" * LIMIT, b"y" * (LIMIT + 1),
    "", "a", "a" * LIMIT, "a" * (LIMIT + 1),               # ASCII
    "\xe9", "\xe9" * LIMIT, "a\xff" * (LIMIT // 2) + "b",  # latin-1
    "\u20ac", "\u20ac" * (LIMIT // 2), "\u20ac" * (LIMIT // 2 + 1),  # UCS-2
    "\U0001f600", "\U0001f600" * (LIMIT // 4),             # UCS-4
    "\U0001f600" * (LIMIT // 4 + 1), "a\U0001f600",
]

FLOATS = [0.0, -0.0, 1.5, -1e308, 5e-324, float("inf"), float("-inf"),
          float("nan")]

VALUES = INTS + TEXTS + FLOATS + [None, True, False]


def same(a, b):
    """Equal, of the exact same type, and for str of the same kind (str
    equality compares kinds first; isascii() reads the ASCII flag)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        # Bit for bit: -0.0 keeps its sign, NaN its payload.
        return struct.pack("<d", a) == struct.pack("<d", b)
    if a != b:
        return False
    if type(a) is str:
        return a.isascii() == b.isascii()
    if a is None or type(a) is bool:
        return a is b
    return True


def small_in_use():
    live, cached = _tpshare._small_block_counts()
    return live - cached


def records_in_use():
    counts, cached = _tpshare._block_counts(), _tpshare._block_cached()
    return counts[0] - cached[0], counts[1] - cached[1]


@pytest.fixture
def echo(shared_sub):
    """Send values to a subinterpreter and back, one by one or batched."""
    to_sub, from_sub = tpshare.Channel(), tpshare.Channel()
    shared_sub.put("to_sub", to_sub)
    shared_sub.put("from_sub", from_sub)

    def round_trip(values, many=False):
        if many:
            to_sub.send_many(values)
            shared_sub.run(f"from_sub.send_many(to_sub.recv_many({len(values)}))")
            got = []
            while len(got) < len(values):
                got += from_sub.recv_many(len(values), timeout=5)
            return got
        for v in values:
            to_sub.send(v)
        shared_sub.run(f"for _ in range({len(values)}): from_sub.send(to_sub.recv())")
        return [from_sub.recv(timeout=5) for _ in values]

    yield round_trip
    shared_sub.run("del to_sub, from_sub")


@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_boundary_values_round_trip(echo, many):
    got = echo(VALUES, many)
    bad = [(v, g) for v, g in zip(VALUES, got) if not same(v, g)]
    assert not bad
    assert got[-3] is None and got[-2] is True and got[-1] is False


def test_immediates_take_no_record_and_compact_blocks_fit_their_class():
    ch = tpshare.Channel()
    records, small = records_in_use(), small_in_use()
    ch.send_many([7, -(2**62), None, True, False] * 200)
    assert records_in_use() == records          # no record at all
    assert small_in_use() == small              # nor a block
    ch.send_many([b"x" * 64] * 100 + ["s" * LIMIT] * 100 + [-0.5] * 100)
    assert records_in_use() == records
    assert small_in_use() == small + 300
    ch.send(2**62)                              # past the limit: a record
    ch.send(b"y" * (LIMIT + 1))
    assert records_in_use() != records
    assert ch.recv_many(3000) == ([7, -(2**62), None, True, False] * 200
                                  + [b"x" * 64] * 100 + ["s" * LIMIT] * 100
                                  + [-0.5] * 100
                                  + [2**62, b"y" * (LIMIT + 1)])
    assert small_in_use() == small
    assert records_in_use() == records


class Int(int):
    pass


class Bytes(bytes):
    pass


class Str(str):
    pass


class Float(float):
    pass


def test_subclasses_and_identity_channels_keep_records():
    ch = tpshare.Channel(fallback="pickle")
    records = records_in_use()
    for v in (Int(5), Bytes(b"ab"), Str("cd"), Float(0.5)):
        ch.send(v)
        assert records_in_use() != records
        got = ch.recv()
        assert type(got) is type(v) and got == v

    ident = tpshare.Channel(identity=True)
    s, b = "shared text", b"shared bytes"
    records = records_in_use()
    ident.send_many([s, b, s, 12345, None])
    assert records_in_use() != records          # identity needs records
    got = ident.recv_many(5)
    assert got == [s, b, s, 12345, None]
    assert got[0] is got[2]                     # identity kept


def test_timeouts_and_full_channels_free_what_was_not_queued():
    ch = tpshare.Channel(maxsize=2)
    small = small_in_use()
    ch.send(b"a")
    ch.send("b")
    with pytest.raises(tpshare.ChannelFull):
        ch.send(b"c", timeout=0)
    with pytest.raises(tpshare.ChannelFull):
        ch.send_many([b"d", "e", 1], timeout=0.01)
    assert small_in_use() == small + 2
    assert ch.recv(timeout=0) == b"a"
    assert ch.recv(timeout=0.01) == "b"
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv(timeout=0)
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv_many(3, timeout=0.01)
    assert small_in_use() == small

    q = tpshare.Queue(maxsize=1)
    q.put_nowait("q")
    with pytest.raises(tpshare.QueueFull):
        q.put("r", timeout=0.01)
    assert q.get_nowait() == "q"
    assert small_in_use() == small


def test_close_and_destroy_with_immediates_queued_give_blocks_back():
    small = small_in_use()
    ch = tpshare.Channel()
    ch.send_many([b"b" * 40, "s" * 8, 1, None, "\u20ac" * 50] * 50)
    assert small_in_use() == small + 150
    ch.close()
    assert ch.recv_many(5) == [b"b" * 40, "s" * 8, 1, None, "\u20ac" * 50]
    assert small_in_use() == small + 147
    stats = ch.stats()
    assert (stats["sent"], stats["received"], stats["dropped"]) == (250, 5, 0)
    del ch                                      # the rest is freed
    assert small_in_use() == small


@pytest.mark.parametrize("policy", [tpshare.UNBOUND, tpshare.UNBOUND_ERROR,
                                    tpshare.UNBOUND_REMOVE], ids=repr)
def test_immediates_of_an_ended_sender_arrive(sub, policy):
    """The sender's exit settles its owner-bound items as the policy says;
    its immediate items are nobody's and arrive as they are, in order."""
    ch = tpshare.Channel(unbounditems=policy)
    sub.put("ch", ch)
    sub.run(
        """
        own = bytearray(b'memory of the sub')
        ch.send_many([1, b'bytes', 'str', None, memoryview(own), True,
                      -(2**62), 'x' * 120])
        ch.send('\\u20ac', unbounditems=tpshare.UNBOUND_REMOVE)
        """
    )
    sub.close()
    got = []
    while ch.qsize():
        try:
            got += ch.recv_many(20, timeout=0)
        except tpshare.ItemInterpreterDestroyed:
            got.append("raised")
    middle = {tpshare.UNBOUND: [tpshare.UNBOUND],
              tpshare.UNBOUND_ERROR: ["raised"],
              tpshare.UNBOUND_REMOVE: []}[policy]
    assert got == ([1, b"bytes", "str", None] + middle
                   + [True, -(2**62), "x" * 120, "\u20ac"])
    assert ch.stats()["dropped"] == (policy is tpshare.UNBOUND_REMOVE)


def test_recv_many_puts_immediates_back_behind_a_failed_item(sub):
    ch = tpshare.Channel(unbounditems=tpshare.UNBOUND_ERROR)
    sub.put("ch", ch)
    sub.run(
        """
        own = bytearray(b'memory of the sub')
        ch.send_many([b'first', memoryview(own), 2, 'three', None])
        """
    )
    sub.close()
    small = small_in_use()
    assert ch.recv_many(10, timeout=0) == [b"first"]
    with pytest.raises(tpshare.ItemInterpreterDestroyed):
        ch.recv_many(10, timeout=0)
    assert ch.recv_many(10, timeout=0) == [2, "three", None]
    assert small_in_use() == small - 2


def test_owner_exit_in_a_child_with_immediates_queued():
    """A subinterpreter's exit while its immediate items sit in a channel
    held by another: they survive it and every block comes back."""
    r = run_child(
        """
        import tpshare
        from tpshare import _tpshare

        def small_in_use():
            live, cached = _tpshare._small_block_counts()
            return live - cached

        start = small_in_use()
        ch = tpshare.Channel()
        it = tpshare.Interpreter()
        it.exec('''
        ch.send_many([i for i in range(1000)] + [b'%d' % i for i in range(1000)]
                     + ['%d' % i for i in range(1000)])
        ''', ch=ch)
        it.close()
        got = ch.recv_many(3000)
        assert got == (list(range(1000)) + [b'%d' % i for i in range(1000)]
                       + ['%d' % i for i in range(1000)]), got[:5]
        # The blocks the sub's thread took are freed by this one, and its
        # magazines went to the depots when its thread ended.
        print("OK", len(got), small_in_use() - start)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OK", "3000", "0"]


values = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.none(), st.booleans(),
    st.binary(max_size=LIMIT + 8),
    st.text(max_size=LIMIT // 2),
    st.text(alphabet=st.characters(min_codepoint=0x10000), max_size=LIMIT // 4 + 2),
    st.floats(),
    st.tuples(st.integers(), st.text(max_size=4)),
)


@given(st.lists(values, max_size=40), st.booleans())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
def test_mixed_values_round_trip(echo, items, many):
    if many and not items:
        return
    got = echo(items, many)
    assert all(same(a, b) for a, b in zip(items, got)) and len(got) == len(items)
