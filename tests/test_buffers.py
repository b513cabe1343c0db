"""The buffer handler: any PEP 3118 exporter is shared zero-copy as a
read-only view, layout preserved, and releasing the view releases the
export in the owner."""

import array
import gc
import io
import mmap
import sys

import numpy
import pytest

import tpshare


def layout(mv):
    try:
        items = mv.tolist()
    except NotImplementedError:  # formats memoryview cannot unpack
        items = mv.tobytes()
    return (mv.format, mv.itemsize, mv.ndim, mv.shape, mv.strides, mv.nbytes, items)


def exporters():
    ba = bytearray(range(48))
    return {
        "bytearray": ba,
        "memoryview": memoryview(bytearray(b"abcdef")),
        "strided-slice": memoryview(bytearray(range(40)))[1::3],
        "negative-stride": memoryview(bytearray(range(16)))[::-2],
        "2d": memoryview(bytearray(range(24))).cast("B", (4, 6)),
        "3d-doubles": memoryview(array.array("d", [i / 3 for i in range(24)])).cast("B").cast("d", (2, 3, 4)),
        "array-int32": array.array("i", [-5, 0, 7, 2**31 - 1]),
        "array-unicode": array.array("w" if sys.version_info >= (3, 13) else "u", "héllo"),
        "numpy-2d-non-contiguous": numpy.arange(24, dtype=numpy.int16).reshape(4, 6)[::2, 1::2],
        "numpy-fortran": numpy.asfortranarray(numpy.arange(12.0).reshape(3, 4)),
        "numpy-struct": numpy.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
    }


@pytest.mark.parametrize("name", list(exporters()))
def test_layout_is_preserved(name):
    obj = exporters()[name]
    src = memoryview(obj)
    with tpshare.share(obj) as s:
        assert s.bound and s.kind == "tpshare.buffer"
        mv = s.rebuild()
        assert layout(mv) == layout(src)
        assert mv.readonly
        assert type(mv.obj) is tpshare.View
        mv.release()
    src.release()


def test_mmap_is_shared_zero_copy():
    m = mmap.mmap(-1, 4096)
    m[:5] = b"hello"
    with tpshare.share(m) as s:
        mv = s.rebuild()
        assert bytes(mv[:5]) == b"hello"
        m[:5] = b"HELLO"  # zero-copy: the view sees the owner's writes
        assert bytes(mv[:5]) == b"HELLO"
        with pytest.raises(BufferError):
            m.close()  # exported
        mv.release()
    m.close()


def test_views_are_read_only():
    ba = bytearray(b"abc")
    with tpshare.share(ba) as s:
        mv = s.rebuild()
        with pytest.raises(TypeError):
            mv[0] = 1
        with pytest.raises(TypeError, match="read-write"):
            io.BytesIO(b"xyz").readinto(mv.obj)  # asks for a writable buffer
        assert memoryview(mv.obj).readonly
        mv.release()
    assert ba == b"abc"


def test_numpy_sees_the_same_array():
    a = numpy.arange(20.0).reshape(4, 5)
    with tpshare.share(a[:, ::2]) as s:
        mv = s.rebuild()
        b = numpy.asarray(mv)
        assert b.shape == (4, 3) and b.strides == a[:, ::2].strides
        assert (b == a[:, ::2]).all()
        a[0, 0] = -1.0
        assert b[0, 0] == -1.0  # zero-copy
        del b
        mv.release()


def test_consumer_flags_are_honoured():
    nc = memoryview(bytearray(range(12)))[::2]
    with tpshare.share(nc) as s:
        mv = s.rebuild()
        # bytes() needs a C-contiguous simple buffer of a non-contiguous
        # source: memoryview.tobytes() copies through the strides instead.
        assert mv.tobytes() == bytes(range(0, 12, 2))
        with pytest.raises(BufferError):
            # hashlib asks for a simple (contiguous) buffer.
            import hashlib

            hashlib.sha256(mv.obj)
        mv.release()


def test_release_propagates_in_process():
    ba = bytearray(b"data")
    s = tpshare.share(ba)
    mv = s.rebuild()
    s.release()  # the view still holds the record
    with pytest.raises(BufferError):
        ba.append(1)
    mv.release()
    ba.append(1)
    assert ba == b"data\x01"


def test_receiver_release_unlocks_the_owner(sub):
    ba = bytearray(b"main memory")
    sub.put("mv", ba)
    assert sub.eval("bytes(mv)") == repr(b"main memory")
    assert sub.eval("mv.obj.owner") == "0"
    stats = tpshare.stats()[tpshare.interpreter_id()]
    assert stats["exports"] == 1 and stats["remote"] == 1
    with pytest.raises(BufferError):
        ba.extend(b"!")
    ba[0:4] = b"MAIN"  # writes are visible to the receiver: same memory
    assert sub.eval("bytes(mv[:4])") == repr(b"MAIN")
    sub.run("mv.release(); del mv")
    tpshare.drain()
    stats = tpshare.stats()[tpshare.interpreter_id()]
    assert stats["exports"] == 0 and stats["remote"] == 0
    ba.extend(b"!")


def test_dropping_the_last_reference_releases(sub):
    ba = bytearray(100)
    sub.put("mv", ba)
    sub.run("del mv")
    gc.collect()
    tpshare.drain()
    ba.extend(b"!")


def test_view_of_subinterpreter_memory_released_in_its_owner(sub):
    sub.run("owner = bytearray(b'sub memory')")
    mv = sub.get("owner")
    assert bytes(mv) == b"sub memory"
    assert mv.obj.owner == sub.id
    sid = int(sub.id)
    assert tpshare.stats()[sid]["remote"] == 1
    sub.run(
        """
        try:
            owner.append(1)
        except BufferError:
            locked = True
        """
    )
    assert sub.eval("locked") == "True"
    mv.release()
    # The release is queued for the owner; it runs when the owner next
    # enters tpshare (or runs bytecode, through one pending call).
    sub.run("tpshare.drain(); owner.append(33)")
    assert sub.eval("bytes(owner)") == repr(b"sub memory!")
    assert tpshare.stats()[sid] == {"exports": 0, "remote": 0, "pending": 0}


def test_same_buffer_twice_in_a_message_is_one_view():
    ba = bytearray(b"twice")
    r = tpshare.share((ba, ba)).rebuild()
    assert r[0] is r[1]
    r[0].release()
    del r
    ba.append(1)


def test_buffer_inside_a_tuple_keeps_the_tuple_bound():
    ba = bytearray(b"inner")
    with tpshare.share((1, "two", ba)) as s:
        assert s.bound
        r = s.rebuild()
        assert r[:2] == (1, "two") and bytes(r[2]) == b"inner"
        r[2].release()
    ba.append(1)


def test_exporter_errors_propagate():
    class Broken:
        def __buffer__(self, flags):
            raise ValueError("no buffer today")

    with pytest.raises(ValueError, match="no buffer today"):
        tpshare.share(Broken())
    assert not tpshare.is_shareable(Broken())
