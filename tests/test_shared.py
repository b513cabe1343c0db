"""tpshare.Shared and the token table."""

import gc

import pytest

import tpshare


def test_rebuild_many_times_gives_new_equal_objects():
    s = tpshare.share("a string value")
    a, b = s.rebuild(), s.rebuild()
    assert a == b == "a string value"
    assert s.kind == "builtins.str"
    assert s.owner == tpshare.interpreter_id()
    assert not s.bound


def test_release_is_idempotent_and_final():
    s = tpshare.share(1)
    s.release()
    s.release()
    assert s.released
    with pytest.raises(ValueError):
        s.rebuild()
    with pytest.raises(ValueError):
        s.detach()
    assert "released" in repr(s)


def test_context_manager_releases():
    ba = bytearray(10)
    with tpshare.share(ba) as s:
        assert s.bound
        with pytest.raises(BufferError):
            ba.append(1)
    assert s.released
    ba.append(1)


def test_token_can_be_attached_once():
    token = tpshare.share((1, 2)).detach()
    assert tpshare.attach(token).rebuild() == (1, 2)
    with pytest.raises(KeyError):
        tpshare.attach(token)
    with pytest.raises(KeyError):
        tpshare.attach(12345678)
    with pytest.raises(TypeError):
        tpshare.attach("nope")


def test_detach_moves_the_hold_to_the_table():
    ba = bytearray(b"x" * 100)
    s = tpshare.share(ba)
    token = s.detach()
    assert s.released
    del s
    gc.collect()
    with pytest.raises(BufferError):  # the table still holds the export
        ba.append(1)
    tpshare.attach(token).release()
    ba.append(1)


def test_tokens_cross_interpreters(sub):
    token = tpshare.share(("from main", 7)).detach()
    sub.run(f"v = tpshare.attach({token}).rebuild()")
    assert sub.eval("v") == "('from main', 7)"
    assert sub.get("v[::-1]") == (7, "from main")


def test_unclaimed_tokens_die_with_their_owner(sub):
    """A record detached by an interpreter and never attached is released
    in that interpreter's exit hook, not leaked."""
    sub.run(
        """
        owner_ba = bytearray(b'abc')
        tok = tpshare.share(owner_ba).detach()
        """
    )
    token = int(sub.eval("tok"))
    sub.close()
    with pytest.raises(KeyError):
        tpshare.attach(token)
