import gc

import pytest

import tpshare
from support import Sub


@pytest.fixture
def sub():
    """A fresh isolated subinterpreter (own GIL), destroyed afterwards."""
    s = Sub()
    yield s
    gc.collect()
    s.close()


@pytest.fixture(scope="module")
def shared_sub():
    """One isolated subinterpreter reused by a whole test module."""
    s = Sub()
    yield s
    gc.collect()
    s.close()


@pytest.fixture(autouse=True)
def no_outstanding_exports():
    """Every test leaves the main interpreter with no export alive."""
    yield
    gc.collect()
    tpshare.drain()
    main = tpshare.stats().get(tpshare.interpreter_id())
    if main is not None:
        assert main["exports"] == 0, main
        assert main["pending"] == 0, main
