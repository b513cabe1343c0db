"""Hypothesis strategies for values tpshare shares natively, and a deep
comparison that checks types and float bits."""

import math
import struct

from hypothesis import strategies as st

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
any_char = st.one_of(st.characters(), surrogates, st.sampled_from("\0\x7f\xff\u0100\uffff\U0010ffff"))

texts = st.one_of(st.text(), st.text(any_char), st.text(st.sampled_from("ab\0")))
ints = st.one_of(
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.integers(min_value=0, max_value=4000).map(lambda n: (-1) ** n * (2**n - 1)),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=200),
    st.binary(min_size=1000, max_size=100_000),
)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=5).map(tuple), max_leaves=20)


def same(a, b):
    """True if b is an exact copy of a: same types all the way down, equal
    values, float bits included (nan payloads, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b
