"""A Hypothesis state machine drives send/recv/close/timeouts on a
channel from the main interpreter and two subinterpreters: FIFO order,
exactly-once delivery, counts consistent."""

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tpshare
from support import Sub

SUBS = []


def setup_module():
    SUBS.extend([Sub(), Sub()])


def teardown_module():
    for s in SUBS:
        s.close()
    SUBS.clear()


values = st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=20), st.tuples(st.integers(), st.text(max_size=5)))
where = st.integers(min_value=0, max_value=2)  # 0: main, 1-2: subinterpreters


class ChannelMachine(RuleBasedStateMachine):
    @initialize(maxsize=st.integers(min_value=0, max_value=4))
    def make(self, maxsize):
        self.ch = tpshare.Channel(maxsize)
        self.maxsize = maxsize
        self.model = deque()
        self.closed = False
        for i, s in enumerate(SUBS):
            s.put("ch", self.ch)

    def full(self):
        return self.maxsize and len(self.model) >= self.maxsize

    @precondition(lambda self: not self.closed)
    @rule(v=values, w=where)
    def send(self, v, w):
        if self.full():
            with pytest.raises(tpshare.ChannelFull):
                self.ch.send(v, timeout=0.001)
            return
        if w == 0:
            self.ch.send(v, timeout=0)
        else:
            SUBS[w - 1].put("v", v)
            SUBS[w - 1].run("ch.send(v, timeout=0)")
        self.model.append(v)

    @rule(w=where)
    def recv(self, w):
        if not self.model:
            exc = tpshare.ChannelClosed if self.closed else tpshare.ChannelEmpty
            with pytest.raises(exc):
                self.ch.recv(timeout=0.001)
            return
        expected = self.model.popleft()
        got = self.ch.recv(timeout=0) if w == 0 else SUBS[w - 1].get("ch.recv(timeout=0)")
        assert got == expected and type(got) is type(expected)

    @rule(n=st.integers(min_value=1, max_value=5))
    def recv_many(self, n):
        if not self.model:
            return
        expected = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        assert self.ch.recv_many(n, timeout=0) == expected

    @precondition(lambda self: not self.closed)
    @rule(vs=st.lists(values, min_size=1, max_size=4))
    def send_many(self, vs):
        if self.maxsize and self.model and len(self.model) + len(vs) > self.maxsize:
            with pytest.raises(tpshare.ChannelFull):
                self.ch.send_many(vs, timeout=0.001)
            return
        self.ch.send_many(vs, timeout=0)
        self.model.extend(vs)

    @rule()
    def close(self):
        self.ch.close()
        self.closed = True
        with pytest.raises(tpshare.ChannelClosed):
            self.ch.send(1)

    @invariant()
    def counts(self):
        assert self.ch.qsize() == len(self.model)
        assert self.ch.closed == self.closed
        stats = self.ch.stats()
        assert stats["sent"] - stats["received"] == len(self.model)

    def teardown(self):
        for s in SUBS:
            s.run("del ch")


ChannelMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
test_channel_state_machine = ChannelMachine.TestCase
