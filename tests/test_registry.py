"""The registry's lookup cache never confuses two types, and registered()
takes no reference that another interpreter could be writing at the same
time."""

import gc
import json
import os
import sys
import textwrap

import pytest

import tpshare
import tpshare_testext as ext
from support import run_child

# Python code for a child process: make a class die, then make classes of
# the same size until one is allocated at the dead class's address (found
# by id()), in a bounded number of tries.  `reuse(addr, make)` returns the
# new class, or None when the address was not reused.
REUSE = """
import gc, json
import tpshare

def reuse(addr, make, tries=2000):
    keep = []
    for _ in range(tries):
        cls = make()
        if id(cls) == addr:
            return cls
        keep.append(cls)
    return None

def report(**kw):
    print(json.dumps(kw))
"""


def child_result(code):
    # AddressSanitizer holds freed memory back from reuse (its quarantine),
    # which would hide the reuse these tests need; it still checks every
    # access against the bounds of live blocks.
    asan = os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
    r = run_child(REUSE + textwrap.dedent(code), env={"ASAN_OPTIONS": asan})
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    if not result.get("reused"):
        pytest.skip("no new class was allocated at the dead class's address")
    return result


def test_a_dead_subclass_answer_is_not_given_to_a_new_type():
    """A subclass of Point, shared (so its answer, Point's hooks, is
    cached) and collected; a class of another layout made at its address
    must not be shared with Point's hooks (which would read past the end
    of its instances)."""
    result = child_result(
        """
        import tpshare_testext as ext

        class P(ext.Point):
            pass

        kind = tpshare.share(P(1, 2)).kind
        addr = id(P)
        del P
        gc.collect()

        def make():
            class Q:
                __slots__ = ()
            return Q

        Q = reuse(addr, make)
        if Q is None:
            report(reused=False)
        else:
            try:
                tpshare.share(Q())
                error = None
            except tpshare.NotShareableError as e:
                error = str(e)
            report(reused=True, kind=kind, error=error,
                   lookup=ext.lookup_name(Q))
        """
    )
    assert result["kind"] == "tpshare_testext.Point"
    assert result["error"] is not None and "'Q'" in result["error"]
    assert result["lookup"] is None


def test_a_dead_unshareable_answer_is_not_given_to_a_new_type():
    """A class found not shareable and collected; a bytearray subclass (a
    buffer exporter) made at its address must be shareable."""
    result = child_result(
        """
        class D:
            __slots__ = ()

        was = tpshare.is_shareable(D())
        addr = id(D)
        del D
        gc.collect()

        def make():
            class B(bytearray):
                pass
            return B

        B = reuse(addr, make)
        if B is None:
            report(reused=False)
        else:
            s = tpshare.share(B(b"abc"))
            view = s.rebuild()
            report(reused=True, was=was, kind=s.kind, data=bytes(view).decode())
            view.release()
            s.release()
        """
    )
    assert result["was"] is False
    assert result["kind"] == "tpshare.buffer"
    assert result["data"] == "abc"


def test_a_buffer_added_to_a_class_after_its_answer_was_cached():
    class X:
        pass

    assert not tpshare.is_shareable(X())
    assert ext.lookup_name(X) is None
    X.__buffer__ = lambda self, flags: memoryview(b"added")
    with tpshare.share(X()) as s:
        assert s.kind == "tpshare.buffer"
        view = s.rebuild()
        assert bytes(view) == b"added"
        view.release()
    del X.__buffer__
    assert not tpshare.is_shareable(X())


def test_a_buffer_added_to_a_base_reaches_its_cached_subclasses():
    class Base:
        pass

    class Sub(Base):
        pass

    assert not tpshare.is_shareable(Sub())
    Base.__buffer__ = lambda self, flags: memoryview(b"from the base")
    with tpshare.share(Sub()) as s:
        view = s.rebuild()
        assert bytes(view) == b"from the base"
        view.release()


def test_a_type_without_version_tags_left_is_answered_uncached():
    """CPython 3.13 gives a class at most 1000 version tags; a class
    changed more often than that has none, and its answers are not
    cached (each lookup resolves again), so they stay right."""

    class X:
        pass

    for i in range(1100):
        X.counter = i
        getattr(X, "missing", None)  # CPython tags it again here
    assert not tpshare.is_shareable(X())
    assert not tpshare.is_shareable(X())
    X.__buffer__ = lambda self, flags: memoryview(b"late")
    with tpshare.share(X()) as s:
        view = s.rebuild()
        assert bytes(view) == b"late"
        view.release()
    del X.__buffer__
    assert not tpshare.is_shareable(X())


def test_changed_bases_change_the_answer():
    A = type("A", (), {})
    ext.register_type(A, "tests.registry.A", subclasses=True)
    try:
        class Other:
            pass

        class C(Other):
            pass

        assert not tpshare.is_shareable(C())
        C.__bases__ = (A,)
        with tpshare.share(C()) as s:
            assert s.kind == "tests.registry.A"
            assert type(s.rebuild()) is A
        assert ext.lookup_name(C) == "tests.registry.A"
        C.__bases__ = (Other,)
        assert not tpshare.is_shareable(C())
        assert ext.lookup_name(C) is None
    finally:
        ext.unregister_type(A)


def test_many_types_stay_correct_past_the_cache_size():
    """More live types than the cache holds answers for: each still gets
    its own answer (evicted ones are looked up again)."""
    A = type("A", (), {})
    ext.register_type(A, "tests.registry.many", subclasses=True)
    try:
        subs = [type(f"S{i}", (A,), {}) for i in range(300)]
        plain = [type(f"P{i}", (), {}) for i in range(300)]
        for _ in range(2):
            for s, p in zip(subs, plain):
                assert ext.lookup_name(s) == "tests.registry.many"
                assert ext.lookup_name(p) is None
    finally:
        ext.unregister_type(A)


def is_immortal(obj):
    # CPython 3.12 and 3.13 report an immortal object's refcount as
    # 2**32 - 1 (and sys._is_immortal() only comes with 3.14).
    return sys.getrefcount(obj) >= 2**31


def test_registered_takes_no_reference_to_a_mortal_static_type(sub):
    """A static type is shared by every interpreter; unless it is immortal
    its refcount is not atomic, so registered() reports None for it
    instead of a reference.  Immortal static types and the interpreter's
    own heap types are reported.  (Only 3.12 has mortal static types:
    3.13's PyType_Ready makes every static type immortal.)"""
    T = ext.mortal_type()
    expected = T if is_immortal(T) else None
    ext.register_type(T, "tests.registry.Mortal")
    try:
        gc.collect()
        refs = sys.getrefcount(T)
        listed = {r[0]: r for r in tpshare.registered()}
        assert listed["tests.registry.Mortal"] == (
            "tests.registry.Mortal", expected, ("copies",))
        del listed
        assert sys.getrefcount(T) == refs
        assert sub.eval(
            "[r[1] for r in tpshare.registered()"
            " if r[0] == 'tests.registry.Mortal']") == f"[{expected!r}]"
        assert sys.getrefcount(T) == refs
        # It is still registered and shared with its hooks.
        assert ext.lookup_name(T) == "tests.registry.Mortal"
        listed = {r[0]: r for r in tpshare.registered()}
        assert listed["builtins.int"] == (
            "builtins.int", int, ("copies", "immutable"))
        assert listed["tpshare_testext.Point"][1] is ext.Point
        assert listed["tpshare_testext.Matrix"][1] is ext.Matrix
        assert listed["tpshare.buffer"][1] is None
        assert sub.eval(
            "[r[1] for r in tpshare.registered()"
            " if r[0] == 'builtins.int']") == "[<class 'int'>]"
    finally:
        ext.unregister_type(T)
    assert "tests.registry.Mortal" not in [r[0] for r in tpshare.registered()]


def test_a_built_in_registration_removed_while_another_interpreter_shares():
    """The table of built-in types is read by every interpreter without a
    lock while a writer clears a slot: each share made meanwhile uses the
    built-in hooks or finds the type unregistered, never anything else.
    (The race itself, plain loads against a store, is only visible to a
    race detector: the slots are atomics.)"""
    r = run_child(
        """
        import threading
        import tpshare, tpshare_testext
        from support import Sub

        reader, writer = Sub(), Sub()
        writer.run("import tpshare_testext as ext")
        reader.run('''
        def loop(n):
            ok = gone = 0
            for i in range(n):
                try:
                    back = tpshare.share(i + 0.5).rebuild()
                except tpshare.NotShareableError:
                    gone += 1
                else:
                    assert back == i + 0.5, back
                    ok += 1
            return ok, gone
        ''')
        threads = [
            threading.Thread(target=reader.run,
                             args=("result = loop(20000)",)),
            threading.Thread(target=writer.run,
                             args=("ext.unregister_type(float)",)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok, gone = eval(reader.eval("result"))
        print(ok + gone, tpshare.is_shareable(0.5),
              reader.eval("tpshare.is_shareable(0.5)"))
        reader.close()
        writer.close()
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["20000", "False", "False"]
