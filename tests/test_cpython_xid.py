"""tpshare's handles inside CPython's own interpreter machinery: Channel,
MemChannel, Queue and Buffer cross prepare_main(), exec's shared
namespace and CPython's queues (3.13) or channels (3.12) into isolated
subinterpreters made by CPython's module, are used there, come back as
the same objects, pickle by id within the process only, and free their
channel once every handle and every item in flight is gone.  The bridge
lets a third-party type registered with tpshare ride the same machinery
as a share record."""

import gc
import pickle
import textwrap
import time

import pytest

import tpshare
import tpshare_testext as ext
from support import run_child

try:  # 3.13
    import _interpreters
    from test.support import interpreters as std_interpreters
    from test.support.interpreters import queues as std_queues
    PY313 = True
except ImportError:  # 3.12
    import _xxinterpchannels as std_channels
    import _xxsubinterpreters as std_subinterpreters
    PY313 = False

# What CPython raises for an object its registry does not know.
NOT_SHAREABLE = (std_interpreters.NotShareableError if PY313
                 else ValueError)

HANDLE_TYPES = [tpshare.Channel, tpshare.MemChannel, tpshare.Queue,
                tpshare.Buffer]


def wait_until(predicate, timeout=30.0):
    """Poll predicate until it is true (a release CPython hands to the
    sending interpreter as a pending call lands a little later)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.001)


def channel_alive(cid):
    """Whether the channel core with this id still exists."""
    try:
        tpshare.Channel.from_id(cid)
    except KeyError:
        return False
    return True


class Std:
    """An isolated interpreter (own GIL) made by CPython's own module, and
    one of CPython's own transports to it: a queue of shared objects
    (syncobj=True) on 3.13, a channel on 3.12.  In the interpreter,
    _put(x) and _get() use the transport."""

    def __init__(self, imports=True):
        if PY313:
            self.interp = std_interpreters.create()
            self.id = self.interp.id
            self.queue = std_queues.create(syncobj=True)
            self.interp.exec("import test.support.interpreters.queues")
            self.interp.prepare_main(_cq=self.queue)
            self.run("""
                def _put(x):
                    _cq.put(x)
                def _get():
                    return _cq.get(timeout=30)
            """)
        else:
            self.id = std_subinterpreters.create(isolated=True)
            self.cid = std_channels.create()
            self.run("""
                import _xxinterpchannels as _c
                def _put(x):
                    _c.send(_cid, x)
                def _get():
                    return _c.recv(_cid)
            """, _cid=self.cid)
        if imports:
            self.run("import tpshare, tpshare_testext as ext")

    def run(self, code, **shared):
        """Run code in the interpreter's __main__, with `shared` bound
        there through exec's shared namespace."""
        code = textwrap.dedent(code)
        if PY313:
            err = _interpreters.exec(self.id, code, shared=shared)
            if err is not None:
                raise RuntimeError(err.formatted)
        else:
            std_subinterpreters.run_string(self.id, code, shared=shared)

    def prepare_main(self, **ns):
        if PY313:
            self.interp.prepare_main(**ns)
        else:   # 3.12 has no prepare_main: exec's shared namespace binds
            self.run("pass", **ns)

    def put(self, obj):
        if PY313:
            self.queue.put(obj)
        else:
            std_channels.send(self.cid, obj)

    def get(self):
        if PY313:
            return self.queue.get(timeout=30)
        return std_channels.recv(self.cid)

    def close(self):
        if PY313:
            self.interp.close()
        else:
            std_subinterpreters.destroy(self.id)


@pytest.fixture
def std():
    s = Std()
    yield s
    gc.collect()
    s.close()


@pytest.mark.skipif(not PY313, reason="3.12 cannot report the GIL config")
def test_the_interpreter_has_its_own_gil(std):
    assert _interpreters.get_config(std.id).gil == "own"


def exercise(std, h, name):
    """Use handle h (bound as `name` in std's __main__) from both sides:
    values arrive across."""
    if isinstance(h, tpshare.Buffer):
        std.run(f"memoryview({name})[:3] = b'xyz'")
        assert bytes(h)[:3] == b"xyz"
        memoryview(h)[3] = 7
        std.run(f"assert memoryview({name})[3] == 7")
    elif isinstance(h, tpshare.Queue):
        h.put(("to sub", 1))
        std.run(f"v = {name}.get(timeout=30); {name}.put((v, 'back'))")
        assert h.get(timeout=30) == (("to sub", 1), "back")
    elif isinstance(h, tpshare.MemChannel):
        std.run(f"_keep = {name}.send(b'from sub')")
        assert bytes(h.recv(timeout=30)) == b"from sub"
        h.send(b"to sub")
        std.run(f"assert bytes({name}.recv(timeout=30)) == b'to sub'")
    else:
        h.send(("to sub", 1))
        std.run(f"v = {name}.recv(timeout=30); {name}.send((v, 'back'))")
        assert h.recv(timeout=30) == (("to sub", 1), "back")


def make(cls):
    return cls(16) if cls is tpshare.Buffer else cls()


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_each_handle_type_crosses_prepare_main(std, cls):
    h = make(cls)
    std.prepare_main(h=h)
    std.run(f"assert type(h) is tpshare.{cls.__name__}, type(h)")
    exercise(std, h, "h")


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_each_handle_type_crosses_execs_shared_namespace(std, cls):
    h = make(cls)
    std.run("ns_h = h", h=h)
    exercise(std, h, "ns_h")


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_each_handle_type_crosses_cpythons_transport_both_ways(std, cls):
    h = make(cls)
    std.put(h)
    std.run("q_h = _get()")
    exercise(std, h, "q_h")
    # One made there comes here and works.
    std.run(f"made = tpshare.{cls.__name__}"
            f"({'16' if cls is tpshare.Buffer else ''}); _put(made)")
    back = std.get()
    assert type(back) is cls
    exercise(std, back, "made")


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_a_handle_comes_back_as_the_same_object(std, cls):
    h = make(cls)
    std.put(h)
    assert std.get() is h
    # In the subinterpreter: the handle it already has.
    std.prepare_main(first=h)
    std.put(h)
    std.put(h)
    std.run("a = _get(); b = _get(); assert a is b is first")


@pytest.mark.skipif(not PY313, reason="CPython's queues are new in 3.13")
@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_a_handle_rides_a_pickling_queue(std, cls):
    # The default queue pickles what it carries: by id here.
    q = std_queues.create()
    h = make(cls)
    q.put(h)
    assert q.get(timeout=30) is h
    std.prepare_main(pq=q)
    q.put(h)
    std.run("pq_h = pq.get(timeout=30)")
    exercise(std, h, "pq_h")


def test_cpythons_channels_carry_handles(std):
    h = tpshare.Channel()
    if PY313:
        from test.support.interpreters import channels
        rch, sch = channels.create()
        sch.send_nowait(h)
        assert rch.recv() is h
        std.run("import test.support.interpreters.channels")
        std.prepare_main(rch=rch)
        sch.send_nowait(h)
        std.run("rch.recv().send('over a CPython channel')")
    else:
        cid = std_channels.create()
        std_channels.send(cid, h)
        assert std_channels.recv(cid) is h
        std_channels.send(cid, h)
        std.run("_c.recv(cid).send('over a CPython channel')", cid=cid)
        std_channels.destroy(cid)
    assert h.recv(timeout=30) == "over a CPython channel"


def test_a_receiver_that_never_imported_tpshare_gets_a_working_handle():
    s = Std(imports=False)
    try:
        s.run("import sys; assert 'tpshare' not in sys.modules")
        ch = tpshare.Channel()
        s.prepare_main(ch=ch)
        s.run("ch.send(('arrived', type(ch).__module__, "
              "'tpshare' in sys.modules))")
        assert ch.recv(timeout=30) == ("arrived", "tpshare", True)
    finally:
        s.close()


def test_a_type_that_is_not_bridged_is_still_refused(std):
    with pytest.raises(NOT_SHAREABLE):
        std.put(ext.Frame(b"abc"))
    with pytest.raises(NOT_SHAREABLE):
        std.prepare_main(f=ext.Frame(b"abc"))


# ---------------------------------------------------------------------
# Pickling by id.

@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_pickle_in_the_same_process_gives_the_same_handle(cls):
    h = make(cls)
    assert pickle.loads(pickle.dumps(h)) is h


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_pickle_unpickled_in_a_subinterpreter_works_there(std, cls):
    h = make(cls)
    std.prepare_main(data=pickle.dumps(h))
    std.run("import pickle; p = pickle.loads(data)")
    exercise(std, h, "p")


def test_tpshares_own_pickle_fallback_carries_handles_by_id(std):
    # A list is not shareable: tpshare.Queue pickles it, handles inside
    # by id.
    q, ch = tpshare.Queue(), tpshare.Channel()
    q.put([ch, 1])
    got = q.get(timeout=30)
    assert got[0] is ch and got[1] == 1
    std.prepare_main(q=q)
    q.put([ch, 2])
    std.run("got, n = q.get(timeout=30); got.send(n * 10)")
    assert ch.recv(timeout=30) == 20


def test_unpickling_a_new_handle_when_none_is_alive_here():
    ch = tpshare.Channel()
    data = pickle.dumps(ch)
    q = tpshare.Queue.from_id(ch.id)   # keeps the channel
    del ch
    gc.collect()
    again = pickle.loads(data)
    assert type(again) is tpshare.Channel and again.id == q.id
    q.put(5)
    assert again.recv(timeout=30) == 5


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_unpickling_a_stale_id_is_a_clear_error(cls):
    data = pickle.dumps(make(cls))
    gc.collect()
    with pytest.raises(tpshare.Error,
                       match=rf"no tpshare\.{cls.__name__} with id \d+ is "
                             "alive in this process"):
        pickle.loads(data)


def _ident(h):
    """The id a handle or a Buffer is pickled under."""
    return h.__reduce__()[1][1]


@pytest.mark.parametrize("cls", HANDLE_TYPES, ids=lambda c: c.__name__)
def test_unpickling_in_another_process_is_a_clear_error(cls):
    h = make(cls)
    data = pickle.dumps(h)
    # The child makes objects until one has the same id: the pickle must
    # still not reach it.
    proc = run_child(f"""
        import pickle, tpshare
        cls = tpshare.{cls.__name__}
        keep = []
        while True:
            x = cls(16) if cls is tpshare.Buffer else cls()
            keep.append(x)
            if x.__reduce__()[1][1] >= {_ident(h)}:
                break
        try:
            pickle.loads(bytes.fromhex({data.hex()!r}))
        except tpshare.Error as exc:
            print("ERROR", exc)
        else:
            print("ATTACHED")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ATTACHED" not in proc.stdout
    assert (f"ERROR this tpshare.{cls.__name__} was pickled in another "
            "process") in proc.stdout


# ---------------------------------------------------------------------
# The bridge: third-party types as share records.

def test_a_type_registered_with_the_bridge_flag_crosses_both_ways(std):
    m = ext.Matrix(2, 2, [1.0, 2.0, 3.0, 4.0])
    std.run("before = ext.rebuild_count()")
    std.put(m)
    std.prepare_main(pm=m)
    std.run("""
        got = _get()
        assert type(got) is ext.Matrix and type(pm) is ext.Matrix
        assert got.tolist() == pm.tolist() == [[1.0, 2.0], [3.0, 4.0]]
        # Rebuilt by the extension's hook, not unpickled.
        assert ext.rebuild_count() == before + 2, ext.rebuild_count()
        _put(ext.Matrix(1, 2, [5.0, 6.0]))
    """)
    back = std.get()
    assert type(back) is ext.Matrix and back == ext.Matrix(1, 2, [5.0, 6.0])


def test_bridge_lets_a_registered_type_cross_with_its_items(std):
    with pytest.raises(NOT_SHAREABLE):
        std.put(ext.Pair(1, "x"))
    tpshare.bridge(ext.Pair)
    std.put(ext.Pair(ext.Matrix(1, 1, [9.0]), "x"))
    std.run("""
        p = _get()
        assert type(p) is ext.Pair and p.b == 'x'
        assert p.a.tolist() == [[9.0]]
    """)
    # The subinterpreter's own class is not bridged until it asks.
    std.run("""
        try:
            _put(ext.Pair(1, 2))
        except Exception as exc:
            refused = type(exc).__name__
        else:
            refused = None
        assert refused in ('NotShareableError', 'ValueError'), refused
        tpshare.bridge(ext.Pair)
        _put(ext.Pair(3, 'y'))
    """)
    back = std.get()
    assert type(back) is ext.Pair and (back.a, back.b) == (3, "y")


def test_the_c_apis_bridge_lets_a_static_type_cross(std):
    """Point is a static type: one bridge serves every interpreter."""
    ext.bridge_type(ext.Point)
    std.put(ext.Point(1.5, -2.0))
    std.run("""
        pt = _get()
        assert type(pt) is ext.Point and (pt.x, pt.y) == (1.5, -2.0)
        _put(ext.Point(3.0, 4.0))
    """)
    back = std.get()
    assert type(back) is ext.Point and (back.x, back.y) == (3.0, 4.0)
    class Plain:
        pass
    with pytest.raises(TypeError, match="not registered with tpshare"):
        ext.bridge_type(Plain)


def test_registered_reports_the_bridge_flag():
    assert ("tpshare_testext.Matrix", ext.Matrix, ("copies", "bridge")) \
        in tpshare.registered()


def test_bridge_refuses_a_type_tpshare_cannot_share():
    class Plain:
        pass
    with pytest.raises(TypeError, match="not registered with tpshare"):
        tpshare.bridge(Plain)
    with pytest.raises(TypeError, match="needs a type"):
        tpshare.bridge(Plain())


def test_a_bridged_owner_bound_record_is_freed_by_its_owner(std):
    tpshare.bridge(ext.Blob)
    frees = ext.blob_frees()
    std.put(ext.Blob(b"payload" * 100))
    gc.collect()
    assert ext.blob_frees() == frees   # in flight: the bytes are held
    std.run("got = _get(); assert got.data == b'payload' * 100")
    wait_until(lambda: ext.blob_frees() == frees + 1)
    assert ext.blob_last_free_interp() == tpshare.interpreter_id()


# ---------------------------------------------------------------------
# Lifetimes: the channel core lives while a handle or an item in flight
# holds it, and no longer.

def test_an_item_in_flight_keeps_the_channel_and_its_release_frees_it(std):
    ch = tpshare.Channel()
    cid = ch.id
    ch.send("queued")
    std.put(ch)
    del ch
    gc.collect()
    assert channel_alive(cid)          # held by the item in flight only
    std.run("x = _get(); assert x.recv(timeout=30) == 'queued'; del x")
    wait_until(lambda: not channel_alive(cid))


def test_a_buffer_in_flight_holds_its_memory_once(std):
    b = tpshare.Buffer(8)
    assert b.refs == 1
    std.put(b)
    assert b.refs == 2                 # the item in flight
    std.run("x = _get()")
    wait_until(lambda: b.refs == 2)    # x; the item was released
    std.run("del x")
    assert b.refs == 1


def test_unpickling_in_a_fork_child_is_a_clear_error():
    # The child has the parent's memory, channel table and random token,
    # but another pid.
    proc = run_child("""
        import os, pickle, tpshare
        ch = tpshare.Channel()
        data = pickle.dumps(ch)
        pid = os.fork()
        if pid == 0:
            try:
                pickle.loads(data)
            except tpshare.Error as exc:
                os.write(1, b"CHILD " + str(exc).encode() + b"\\n")
            os._exit(0)
        os.waitpid(pid, 0)
        print("PARENT", pickle.loads(data) is ch)
    """)
    assert proc.returncode == 0, proc.stderr
    child, parent = proc.stdout.splitlines()
    assert child.startswith("CHILD this tpshare.Channel was pickled in "
                            "another process")
    assert parent == "PARENT True"


def test_pickling_holds_nothing():
    ch = tpshare.Channel()
    cid = ch.id
    data = pickle.dumps(ch)
    del ch
    gc.collect()
    assert not channel_alive(cid)
    with pytest.raises(tpshare.Error):
        pickle.loads(data)


def test_an_interpreter_destroyed_with_items_in_flight():
    """The interpreter that made a channel and a Buffer and put them in
    CPython's transport is destroyed before they are taken: the items are
    released with it, so the channel core and the memory are freed, while
    the channel the main interpreter holds lives on."""
    proc = run_child('''
        import gc, pickle
        import tpshare
        from test_cpython_xid import Std, PY313, channel_alive
        std = Std()
        keep = tpshare.Channel()
        std.prepare_main(keep=keep)
        std.run("""
            import pickle
            ch = tpshare.Channel()
            ch.send(1)
            b = tpshare.Buffer(1 << 20)
            keep.send((ch.id, pickle.dumps(b)))
            _put(ch)
            _put(keep)
            _put(b)
            del ch, b
        """)
        cid, bdata = keep.recv(timeout=30)
        print("BEFORE", channel_alive(cid))
        std.close()
        gc.collect()
        left = []
        while True:
            try:
                left.append(std.get() if not PY313
                            else std.queue.get_nowait())
            except Exception:
                break
        print("LEFT", sorted({type(x).__name__ for x in left}))
        print("CHANNEL", channel_alive(cid))
        try:
            pickle.loads(bdata)
        except tpshare.Error:
            print("BUFFER freed")
        else:
            print("BUFFER alive")
        print("KEEP", channel_alive(keep.id))
    ''')
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "BEFORE True"
    # Nothing of the destroyed interpreter is delivered (3.13 delivers
    # its UNBOUND marker in place of each item; 3.12 drops them).
    assert not {"Channel", "Buffer"} & set(eval(out[1][len("LEFT "):]))
    assert out[2:] == ["CHANNEL False", "BUFFER freed", "KEEP True"]
