"""A third-party C extension (tests/ext) built against tpshare.h alone:
its heap and static types cross real subinterpreters and arrive as the
receiver's own classes; misbehaving hooks fail cleanly."""

import gc
import sys

import pytest

import tpshare
import tpshare_testext as ext
from support import run_child

MAIN = 0


@pytest.fixture
def xsub(sub):
    """A subinterpreter that imported the test extension."""
    sub.run("import tpshare_testext as ext")
    return sub


def test_the_extension_uses_the_same_abi():
    assert ext.api_version() == tpshare.ABI_VERSION


def test_abi_mismatch_is_a_clean_import_error():
    with pytest.raises(ImportError, match=r"ABI version 999.*provides version 2"):
        import tpshare_abi_mismatch  # noqa: F401


class _Sized:
    """A fresh type for each registration attempt of the size tests."""


@pytest.mark.parametrize("size", [0, 8, "known-1"])
def test_hooks_smaller_than_known_are_refused_naming_both_sizes(size):
    known = ext.hooks_size()
    size = known - 1 if size == "known-1" else size
    cls = type("Small", (_Sized,), {})
    with pytest.raises(ValueError) as info:
        ext.register_sized(cls, "test.small", size)
    msg = str(info.value)
    assert f"hooks of {size} bytes" in msg
    assert f"at least {known}" in msg and "TPSHARE_HOOKS_INIT" in msg
    assert ext.lookup_name(cls) is None


def test_bigger_hooks_with_unknown_fields_set_are_refused():
    known = ext.hooks_size()
    cls = type("Big", (_Sized,), {})
    with pytest.raises(ValueError, match=rf"{known + 16} bytes.*knows {known}"):
        ext.register_sized(cls, "test.big", known + 16, 1)
    assert ext.lookup_name(cls) is None


def test_bigger_hooks_whose_unknown_fields_are_zero_are_accepted():
    known = ext.hooks_size()
    cls = type("Newer", (_Sized,), {})
    ext.register_sized(cls, "test.newer", known + 16, 0)
    try:
        assert ext.lookup_name(cls) == "test.newer"
        assert type(tpshare.share(cls()).rebuild()) is cls
    finally:
        ext.unregister_type(cls)


def test_heap_type_round_trips_in_process():
    m = ext.Matrix(2, 3, [1, 2, 3, 4, 5, 6])
    before = ext.rebuild_count()
    r = tpshare.share(m).rebuild()
    assert r == m and r is not m and type(r) is ext.Matrix
    assert ext.rebuild_count() == before + 1


def test_heap_type_arrives_as_the_receivers_own_class(xsub):
    m = ext.Matrix(2, 2, [1.5, -2.0, 3.25, 4.0])
    xsub.put("m", m)
    assert xsub.eval("type(m) is ext.Matrix") == "True"
    assert xsub.eval(f"id(type(m)) != {id(ext.Matrix)}") == "True"
    assert xsub.eval("m.tolist()") == "[[1.5, -2.0], [3.25, 4.0]]"
    assert xsub.eval("ext.rebuild_count()") == "1"
    back = xsub.get("ext.Matrix(1, 2, [7, 8])")
    assert type(back) is ext.Matrix and back.tolist() == [[7.0, 8.0]]


def test_receiver_without_the_registration_gets_a_clear_error(sub):
    m = ext.Matrix(1, 1, [1.0])
    token = tpshare.share(m).detach()
    sub.run(f"s = tpshare.attach({token})")
    sub.run(
        """
        try:
            s.rebuild()
        except LookupError as e:
            err = str(e)
        """
    )
    assert "tpshare_testext.Matrix" in sub.eval("err")
    assert "import the module" in sub.eval("err")
    sub.run("import tpshare_testext as ext; m = s.rebuild()")  # now it works
    assert sub.eval("m.tolist()") == "[[1.0]]"


def test_static_type_and_its_subclasses(xsub):
    class MyPoint(ext.Point):
        pass

    assert ext.lookup_name(MyPoint) == "tpshare_testext.Point"
    r = tpshare.share((ext.Point(1, 2), MyPoint(3, 4))).rebuild()
    assert [type(p) for p in r] == [ext.Point, ext.Point]
    assert (r[1].x, r[1].y) == (3.0, 4.0)
    xsub.put("p", MyPoint(5, 6))
    assert xsub.eval("(type(p) is ext.Point, p.x, p.y)") == "(True, 5.0, 6.0)"


def test_owner_bound_third_party_data_is_freed_in_its_owner(xsub):
    frees = ext.blob_frees()
    xsub.put("b", ext.Blob(b"blob from main"))
    assert xsub.eval("b.data") == repr(b"blob from main")
    xsub.run("del b")
    gc.collect()
    tpshare.drain()
    assert ext.blob_frees() == frees + 1
    assert ext.blob_last_free_interp() == MAIN  # ran in the owner: main

    frees = ext.blob_frees()
    got = xsub.get("ext.Blob(b'blob from the sub')")
    assert got.data == b"blob from the sub"
    gc.collect()
    # Main dropped its hold; the free waits for the (idle) owner.
    assert ext.blob_frees() == frees
    assert tpshare.stats()[int(xsub.id)]["pending"] == 1
    xsub.run("tpshare.drain()")
    assert ext.blob_frees() == frees + 1
    assert ext.blob_last_free_interp() == int(xsub.id)


def test_nested_memoryview_record_shares_memory_zero_copy(xsub):
    ba = bytearray(b"frame")
    f = ext.Frame(ba)
    xsub.put("f", f)
    assert xsub.eval("(type(f) is ext.Frame, f.tobytes())") == "(True, b'frame')"
    ba[0] = ord("F")  # the receiver reads the sender's memory, not a copy
    assert xsub.eval("f.tobytes()") == repr(b"Frame")
    del f
    gc.collect()
    with pytest.raises(BufferError):  # still exported for the receiver
        ba.extend(b"!")
    xsub.run("del f")
    gc.collect()
    tpshare.drain()  # the receiver's release runs here, in the owner
    ba.extend(b"!")
    assert ba == b"Frame!"


def test_container_type_shares_nested_objects_once(xsub):
    s = "the same str"
    p = ext.Pair(s, (s, ext.Point(1, 1)))
    r = tpshare.share(p).rebuild()
    assert type(r) is ext.Pair and r.a is r.b[0]
    xsub.put("p", p)
    assert xsub.eval("p.a is p.b[0] and type(p.b[1]) is ext.Point") == "True"


def test_container_type_names_the_position_of_the_unshareable():
    with pytest.raises(tpshare.NotShareableError, match=r"'list'.*Pair > tuple\[1\]"):
        tpshare.share(ext.Pair(1, (2, [3])))


def test_container_type_with_a_buffer_is_owner_bound():
    ba = bytearray(b"inside a pair")
    with tpshare.share(ext.Pair(ba, None)) as s:
        assert s.bound
        r = s.rebuild()
        assert bytes(r.a) == b"inside a pair"
        r.a.release()
    ba.append(1)


@pytest.mark.parametrize(
    "cls, exc, match",
    [
        ("BadRaise", ValueError, "BadRaise refuses"),
        ("BadNull", SystemError, "failed without setting an exception"),
        ("BadLeave", SystemError, "share hook of .* succeeded with an "
                                  "exception set"),
    ],
)
def test_share_hooks_that_misbehave(cls, exc, match):
    obj = getattr(ext, cls)()
    refs = sys.getrefcount(obj)
    with pytest.raises(exc, match=match) as info:
        tpshare.share(obj)
    if cls == "BadLeave":       # what the hook left is kept as the cause
        assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(exc, match=match):
        tpshare.share((1, obj))
    assert not tpshare.is_shareable(obj)
    assert sys.getrefcount(obj) == refs


@pytest.mark.parametrize(
    "cls, exc, match",
    [
        ("BadRebuildNull", SystemError, "returned NULL without setting"),
        ("BadRebuildType", TypeError, "returned a 'int', not a"),
        ("BadRebuildRaise", RuntimeError, "cannot rebuild"),
        ("BadRebuildLeave", SystemError, "rebuild hook of .* succeeded with "
                                         "an exception set"),
    ],
)
def test_rebuild_hooks_that_misbehave(cls, exc, match, xsub):
    obj = getattr(ext, cls)()
    refs = sys.getrefcount(obj)
    with tpshare.share((obj, "x")) as s:
        with pytest.raises(exc, match=match):
            s.rebuild()
    with pytest.raises(exc, match=match):
        ext.roundtrip(obj)
    xsub.run(f"ok = True\ntry:\n    x = tpshare.attach({tpshare.share(obj).detach()}).rebuild()\nexcept {exc.__name__}:\n    ok = False")
    assert xsub.eval("ok") == "False"
    assert sys.getrefcount(obj) == refs


def test_registering_twice_is_an_error_unless_replacing():
    with pytest.raises(ValueError, match="already registered"):
        ext.register_point_again()
    ext.register_point_again(replace=True)
    assert ext.roundtrip(ext.Point(1, 2)) == ext.Point(1, 2)


def test_a_name_cannot_serve_two_types():
    T = type("T", (), {})
    with pytest.raises(ValueError, match="already registered for another type"):
        ext.register_type(T, "tpshare_testext.Point")
    assert not tpshare.is_shareable(T())


def test_register_unregister_from_python_visible_types():
    T = type("T", (), {})
    ext.register_type(T, "tests.T")
    assert ("tests.T", T, ("copies",)) in tpshare.registered()
    assert type(tpshare.share(T()).rebuild()) is T
    ext.unregister_type(T)
    assert not tpshare.is_shareable(T())
    with pytest.raises(KeyError):
        ext.unregister_type(T)


def test_subclasses_only_where_the_hooks_opt_in():
    A = type("A", (), {})
    B = type("B", (), {})
    ext.register_type(A, "tests.A")
    ext.register_type(B, "tests.B", subclasses=True)
    try:
        assert not tpshare.is_shareable(type("SubA", (A,), {})())
        sub_b = type("SubB", (B,), {})()
        assert type(tpshare.share(sub_b).rebuild()) is B
    finally:
        ext.unregister_type(A)
        ext.unregister_type(B)


def test_heap_type_registration_dies_with_the_type():
    """A new type that reuses a dead registered type's address must not
    inherit its hooks."""
    T = type("Doomed", (), {})
    ext.register_type(T, "tests.Doomed")
    addr = id(T)
    assert tpshare.is_shareable(T())
    del T
    gc.collect()
    assert "tests.Doomed" not in [r[0] for r in tpshare.registered()]
    reused = False
    keep = []
    for _ in range(200):
        U = type("Fresh", (), {})
        assert not tpshare.is_shareable(U())
        assert ext.lookup_name(U) is None
        if id(U) == addr:
            reused = True
            break
        keep.append(U)
    # The name is free again, too.
    V = type("Doomed", (), {})
    ext.register_type(V, "tests.Doomed")
    ext.unregister_type(V)
    print("address reused:", reused)


def test_heap_type_registrations_are_per_interpreter(xsub):
    T = type("OnlyInMain", (), {})
    ext.register_type(T, "tests.OnlyInMain")
    try:
        assert "tests.OnlyInMain" not in xsub.eval("[r[0] for r in tpshare.registered()]")
        assert "tpshare_testext.Matrix" in xsub.eval("[r[0] for r in tpshare.registered()]")
        token = tpshare.share(T()).detach()
        xsub.run(f"s = tpshare.attach({token})")
        xsub.run("try:\n    s.rebuild()\nexcept LookupError as e:\n    err = str(e)")
        assert "tests.OnlyInMain" in xsub.eval("err")
        # The same name registered in the receiver rebuilds as its class.
        xsub.run("T = type('OnlyInMain', (), {}); ext.register_type(T, 'tests.OnlyInMain')")
        xsub.run("r = s.rebuild()")
        assert xsub.eval("type(r) is T") == "True"
    finally:
        ext.unregister_type(T)


def test_registrations_of_a_destroyed_interpreter_are_gone():
    from support import Sub

    with Sub() as s:
        s.run("import tpshare_testext as ext; T = type('Gone', (), {}); ext.register_type(T, 'tests.Gone')")
        assert "tests.Gone" in s.eval("[r[0] for r in tpshare.registered()]")
    T = type("Gone", (), {})
    ext.register_type(T, "tests.Gone")  # the name is free in main
    ext.unregister_type(T)


# --- ShareItem, MustCopy and DataAlloc (tests/ext/testext_items.c) ---


def test_share_item_round_trips_and_shares_a_repeated_item_once(xsub):
    s = "once in the message"
    v = ext.Vec(1, s, (s, 2.5), None, ext.Chunk(b"c" * 40))
    r = tpshare.share(v).rebuild()
    assert type(r) is ext.Vec and r is not v
    items = r.tuple()
    assert items[:4] == (1, s, (s, 2.5), None)
    assert items[1] is items[2][0]
    assert type(items[4]) is ext.Chunk and items[4].bytes == b"c" * 40
    xsub.put("v", ext.Vec("a", ext.Vec(2, "a")))
    assert xsub.eval("type(v) is ext.Vec and type(v.tuple()[1]) is ext.Vec") == "True"
    assert xsub.eval("v.tuple()[0] is v.tuple()[1].tuple()[1]") == "True"


@pytest.mark.parametrize(
    "make, path",
    [
        (lambda bad: ext.Vec(1, 2, bad), r"tpshare_testext\.Vec\[2\]\)"),
        (lambda bad: ext.Vec(0, (1, bad)),
         r"tpshare_testext\.Vec\[1\] > tuple\[1\]\)"),
        (lambda bad: (0, ext.Vec(bad)),
         r"found at tuple\[1\] > tpshare_testext\.Vec\[0\]\)"),
        (lambda bad: ext.Vec(ext.Pair(1, bad)),
         r"Vec\[0\] > tpshare_testext\.Pair\)"),
    ],
)
def test_share_item_errors_name_the_index_path(make, path):
    bad = [3]
    obj = make(bad)
    refs = sys.getrefcount(bad)
    with pytest.raises(tpshare.NotShareableError, match=r"'list'.*" + path):
        tpshare.share(obj)
    assert not tpshare.is_shareable(obj)
    assert sys.getrefcount(bad) == refs


@pytest.mark.parametrize(
    "n, path", [(0, "inline"), (16, "inline"), (17, "block"), (64, "block"),
                (128, "block"), (129, "block"), (5000, "block"),
                (16384, "block"), (16385, "ref"), (50000, "ref")],
)
def test_chunk_takes_the_way_its_size_allows(n, path):
    data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    before = ext.chunk_paths()
    with tpshare.share(ext.Chunk(data)) as s:
        assert s.bound == (path == "ref")
        assert s.rebuild().bytes == data
    after = ext.chunk_paths()
    assert {k: after[k] - before[k] for k in after} == {
        k: int(k == path) for k in after}


def test_data_alloc_memory_goes_with_the_record():
    """Chunks of 17-128 bytes take one small block each through
    DataAlloc, which tpshare frees with the record: the free hook sees
    ptr NULL, and the blocks in use are back where they were."""
    r = run_child("""
        import tpshare
        import tpshare_testext as ext
        from tpshare import _tpshare

        def in_use():
            counts, cached = _tpshare._block_counts(), _tpshare._block_cached()
            return counts[0] - cached[0], counts[1] - cached[1]

        ch = tpshare.Channel()
        values = [b"%040d" % i for i in range(300)] + [b"%0128d" % i for i in range(300)]
        chunks = [ext.Chunk(v) for v in values]
        ch.send(ext.Chunk(b"w" * 50)); ch.recv()   # the thread's caches
        start, paths, frees = in_use(), ext.chunk_paths(), ext.chunk_frees()
        for c in chunks:
            ch.send(c)
        # Each: a record (two lines) and its payload block (two lines).
        assert in_use() == (start[0] + 2 * 600, start[1]), (in_use(), start)
        assert ext.chunk_paths()["block"] == paths["block"] + 600
        got = [ch.recv().bytes for _ in values]
        assert got == values
        assert in_use() == start, (in_use(), start)
        calls, null = ext.chunk_frees()
        assert (calls - frees[0], null - frees[1]) == (600, 600)
        print("OK")
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_must_copy_keeps_an_immutable_value_of_an_exited_sender(xsub):
    """At its sender's exit, a Chunk still queued is shared again with
    MustCopy() on: it copies its bytes instead of referencing them and
    stays deliverable.  A Chunk that ignores MustCopy() stays owner-bound,
    so the channel delivers UNBOUND in its place."""
    ch = tpshare.Channel()
    xsub.put("ch", ch)
    before = ext.chunk_paths()
    xsub.run("ch.send(ext.Chunk(b'kept' * 5000))")
    assert ext.chunk_paths()["ref"] == before["ref"] + 1
    xsub.close()
    assert ext.chunk_paths()["copy"] == before["copy"] + 1
    got = ch.recv()
    assert type(got) is ext.Chunk and got.bytes == b"kept" * 5000
    assert ch.qsize() == 0


def test_a_chunk_that_ignores_must_copy_is_lost_with_its_sender():
    from support import Sub

    ch = tpshare.Channel()
    before = ext.chunk_paths()
    ext.chunk_obey_must_copy(False)
    try:
        with Sub() as s:
            s.run("import tpshare_testext as ext")
            s.put("ch", ch)
            s.run("ch.send(ext.Chunk(b'lost' * 5000)); ch.send('after')")
    finally:
        ext.chunk_obey_must_copy(True)
    after = ext.chunk_paths()
    assert (after["ref"] - before["ref"], after["copy"] - before["copy"]) == (2, 0)
    assert ch.recv() is tpshare.UNBOUND
    assert ch.recv() == "after"
