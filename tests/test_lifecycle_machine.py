"""A Hypothesis state machine over three interpreters (the main one and
two subinterpreters) where the subinterpreters also end and are replaced
mid-run: neutral values, owner-bound immutable values (rescued when their
sender ends), views of a sender's memory (which follow the channel's
unbound-item policy when their sender ends), poison items (whose rebuild
raises), views held by the receiver across their owner's end, and close.

Every item is received exactly once, in order, or delivered as its
policy's marker; a poison item raises once and lets the items behind it
through; the interpreters' export counters return to zero."""

import threading
from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize,
                                 invariant, precondition, rule)

import tpshare
from support import Sub

SUBS = []
POLICIES = [tpshare.UNBOUND, tpshare.UNBOUND_ERROR, tpshare.UNBOUND_REMOVE]
# Bytes of at least this size are shared owner-bound, not copied.
BOUND_SIZE = 4096

POISON_CLASS = """
class Poison:
    def __reduce__(self):
        return (int, ("poison",))
"""


def setup_module():
    SUBS.extend([Sub(), Sub()])


def teardown_module():
    for s in SUBS:
        s.close()
    SUBS.clear()


# What a message is, as the model sees it: (kind, expected value).
neutral = st.one_of(st.integers(), st.text(max_size=12),
                    st.binary(max_size=24),
                    st.tuples(st.integers(), st.text(max_size=4)))
kinds = st.sampled_from(["neutral", "bound", "view", "poison"])
where = st.integers(min_value=0, max_value=2)     # 0: main, 1-2: SUBS
fill = st.integers(min_value=0, max_value=255)
size = st.integers(min_value=BOUND_SIZE, max_value=3 * BOUND_SIZE)


class LifecycleMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(POLICIES))
    def make(self, policy):
        self.policy = policy
        self.ch = tpshare.Channel(fallback="pickle", unbounditems=policy)
        # Items: [kind, expected, owner slot (0 main, 1-2 SUBS)].
        self.model = deque()
        self.closed = False
        self.held = []          # (owner slot, view, expected bytes)
        for s in SUBS:
            s.put("ch", self.ch)
            s.run(POISON_CLASS)
        exec(POISON_CLASS, globals())

    # -- sending ---------------------------------------------------------

    def send_from(self, w, kind, value, n, b):
        """Send one item of `kind` from slot w; return what a receiver
        should see."""
        if kind == "neutral":
            code, expected = "ch.send(v)", value
        elif kind == "bound":
            code, expected = f"ch.send(bytes([{b}]) * {n})", bytes([b]) * n
        elif kind == "view":
            code = f"ch.send(bytearray([{b}]) * {n})"
            expected = bytes([b]) * n
        else:
            code, expected = "ch.send(Poison())", None
        if w == 0:
            exec(code, {"ch": self.ch, "v": value, "Poison": Poison})
        else:
            if kind == "neutral":
                SUBS[w - 1].put("v", value)
            SUBS[w - 1].run(code)
        return expected

    @precondition(lambda self: not self.closed)
    @rule(kind=kinds, w=where, value=neutral, n=size, b=fill)
    def send(self, kind, w, value, n, b):
        expected = self.send_from(w, kind, value, n, b)
        self.model.append([kind, expected, w])

    @precondition(lambda self: not self.closed)
    @rule(w=st.integers(min_value=1, max_value=2), n=size, b=fill)
    def send_view_from_sub(self, w, n, b):
        """The case the unbound policy is about, drawn more often."""
        self.send(kind="view", w=w, value=None, n=n, b=b)

    @precondition(lambda self: self.closed)
    @rule(w=where)
    def send_after_close(self, w):
        if w == 0:
            with pytest.raises(tpshare.ChannelClosed):
                self.ch.send(1)
        else:
            SUBS[w - 1].run("""
                try:
                    ch.send(1)
                except tpshare.ChannelClosed:
                    pass
                else:
                    raise AssertionError("send after close")
            """)

    # -- receiving -------------------------------------------------------

    @rule(hold=st.booleans())
    def recv(self, hold):
        if not self.model:
            exc = tpshare.ChannelClosed if self.closed else tpshare.ChannelEmpty
            with pytest.raises(exc):
                self.ch.recv(timeout=0)
            return
        kind, expected, owner = self.model.popleft()
        if kind == "poison":
            with pytest.raises(ValueError, match="poison"):
                self.ch.recv(timeout=0)
        elif kind == "unbound":
            assert self.ch.recv(timeout=0) is tpshare.UNBOUND
        elif kind == "unbound-error":
            with pytest.raises(tpshare.ItemInterpreterDestroyed):
                self.ch.recv(timeout=0)
        elif kind == "view":
            got = self.ch.recv(timeout=0)
            assert isinstance(got, memoryview)
            assert got.tobytes() == expected
            if hold and owner != 0:
                self.held.append((owner, got, expected))
            else:
                got.release()
        else:
            got = self.ch.recv(timeout=0)
            assert got == expected and type(got) is type(expected)

    @precondition(lambda self: self.model
                  and self.model[0][0] in ("neutral", "bound"))
    @rule(w=st.integers(min_value=1, max_value=2))
    def recv_in_sub(self, w):
        kind, expected, owner = self.model.popleft()
        got = SUBS[w - 1].get("ch.recv(timeout=0)")
        assert got == expected and type(got) is type(expected)

    # -- interpreters end ------------------------------------------------

    @rule(w=st.integers(min_value=1, max_value=2))
    def end_and_replace(self, w):
        """Sub w ends (with views of its memory possibly held here,
        released by another thread while its teardown waits for them)
        and a new one takes its slot."""
        mine = [h for h in self.held if h[0] == w]
        self.held = [h for h in self.held if h[0] != w]
        for _, view, expected in mine:
            assert view.tobytes() == expected

        def release_later():
            for _, view, _ in mine:
                view.release()

        timer = threading.Timer(0.02, release_later)
        timer.start()
        SUBS[w - 1].close()
        timer.join()
        for _, view, _ in mine:
            with pytest.raises(ValueError):
                view.tobytes()          # released, not dangling
        # What it sent and nobody received yet.
        for item in self.model:
            if item[2] != w:
                continue
            if item[0] == "view":
                if self.policy is tpshare.UNBOUND:
                    item[0] = "unbound"
                elif self.policy is tpshare.UNBOUND_ERROR:
                    item[0] = "unbound-error"
                else:
                    item[0] = "removed"
            item[2] = -1                # its owner is gone
        self.model = deque(i for i in self.model if i[0] != "removed")
        sub = Sub()
        SUBS[w - 1] = sub
        sub.put("ch", self.ch)
        sub.run(POISON_CLASS)

    @rule()
    def close(self):
        self.ch.close()
        self.closed = True

    # -- checks ----------------------------------------------------------

    @invariant()
    def counts(self):
        assert self.ch.qsize() == len(self.model)
        assert self.ch.closed == self.closed

    def teardown(self):
        while self.model:
            self.recv(hold=False)
        for _, view, _ in self.held:
            view.release()
        self.held.clear()
        for s in SUBS:
            s.run("del ch\ntpshare.drain()")
        del self.ch
        tpshare.drain()
        stats = tpshare.stats()
        for interp in [0] + [int(s.id) for s in SUBS]:
            assert stats.get(interp, {"exports": 0, "remote": 0,
                                      "pending": 0}) == {
                "exports": 0, "remote": 0, "pending": 0}, (interp, stats)


LifecycleMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None)
test_lifecycle_state_machine = LifecycleMachine.TestCase
