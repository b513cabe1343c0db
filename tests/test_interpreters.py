"""Interpreters that run in the background: tpshare.Interpreter in
both modes, tpshare.Pool, results and remote errors, closing, idle
workers draining releases, Ctrl-C, process exit, churn and leaks,
and coexistence with the standard library's interpreters.

Functions the workers run live in a helper module written to a temporary
folder (see HELPERS): workers import them by name, and importing this
file there would import pytest, which CPython 3.12.1 cannot do in an
isolated interpreter without aborting at exit (a CPython bug, reproduced
with _xxsubinterpreters alone)."""

import concurrent.futures
import gc
import operator
import os
import pickle
import sys
import textwrap
import threading
import time

import pytest

import tpshare
from support import SANITIZED, _stdinterp, run_child

HELPERS = '''
"""Functions run inside interpreters by tests/test_interpreters.py."""
import threading
import time

import tpshare


class Boom(Exception):
    pass


def boom(message):
    raise Boom(message)


def add(a, b=0, *, c=0):
    return a + b + c


def where():
    return (tpshare.interpreter_id(), threading.get_ident())


def record(ch, value):
    ch.send(value)
    return value


def relay(inbox, outbox):
    outbox.send((inbox.recv(timeout=30), tpshare.interpreter_id()))


def blob(n):
    return bytearray(b"x" * n)


def unshareable():
    return [1, 2]


def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def spin_after_a_callback(started, seconds):
    """Spin in a weakref callback (which swallows any exception raised
    in it), then outside it."""
    import weakref

    class Ref:
        pass

    def callback(_):
        started.send(1)
        spin(seconds)
    obj = Ref()
    ref = weakref.ref(obj, callback)
    del obj
    return spin(seconds), ref


def wait_gate(started, gate):
    started.send(tpshare.interpreter_id())
    return gate.recv(timeout=60)


def rendezvous(mine, theirs, token):
    mine.send(token)
    return (tpshare.interpreter_id(), theirs.recv(timeout=30))
'''

THREAD_MODES = [pytest.param(True, id="thread"),
                pytest.param(False, id="caller-thread")]


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    """The helper module, importable here and in the interpreters made
    while it is on sys.path."""
    folder = tmp_path_factory.mktemp("interp_helpers")
    (folder / "tpshare_test_helpers.py").write_text(HELPERS)
    sys.path.insert(0, str(folder))
    import tpshare_test_helpers
    yield tpshare_test_helpers
    sys.path.remove(str(folder))


@pytest.fixture
def helper_env(helpers):
    """Environment for child processes that use the helper module."""
    folder = os.path.dirname(helpers.__file__)
    return {"PYTHONPATH": os.pathsep.join(
        p for p in (folder, os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(params=THREAD_MODES)
def interp(request, helpers):
    it = tpshare.Interpreter(thread=request.param)
    yield it
    gc.collect()
    it.close()
    assert it.id not in tpshare.stats()


def stdlib_ids():
    """IDs of every interpreter, as the standard library lists them."""
    return {int(i[0] if isinstance(i, tuple) else i)
            for i in _stdinterp.list_all()}


def wait_until(predicate, timeout=5.0):
    """Poll predicate (tests only: the library never polls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


# ---------------------------------------------------------------------------
# Identity and modes.


def test_id_is_the_runtimes(interp):
    assert interp.call(tpshare.interpreter_id).result() == interp.id
    assert interp.id != tpshare.interpreter_id()
    assert interp.id in stdlib_ids()
    assert interp in tpshare.list_interpreters()
    assert interp.id in tpshare._tpshare._interp_list()


def test_thread_modes(helpers):
    with tpshare.Interpreter() as threaded, \
            tpshare.Interpreter(thread=False) as here:
        iid, ident = threaded.call(helpers.where).result()
        assert iid == threaded.id and ident != threading.get_ident()
        iid, ident = here.call(helpers.where).result()
        assert iid == here.id and ident == threading.get_ident()
        assert repr(here) == (f"<tpshare.Interpreter id={here.id} "
                              "thread=False open>")


def test_caller_thread_mode_serves_many_threads(helpers):
    with tpshare.Interpreter(thread=False) as it:
        def work(i):
            return it.call(helpers.add, i, 1000).result()

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            assert list(ex.map(work, range(40))) == [
                i + 1000 for i in range(40)]


# ---------------------------------------------------------------------------
# Running code and calls.


def test_call_returns_a_future(interp, helpers):
    f = interp.call(helpers.add, 1, 2, c=3)
    assert isinstance(f, concurrent.futures.Future)
    assert f.result() == 6
    assert interp.call(pow, 2, 300).result() == 2**300
    assert interp.call(int, "ff", base=16).result() == 255
    assert interp.call(operator.mul, "ab", 3).result() == "ababab"
    assert interp.submit(divmod, 7, 2).result() == (3, 1)


def test_exec_binds_shared_values_in_main(interp):
    ch, mem = tpshare.Channel(), tpshare.MemChannel()
    buf = bytearray(b"main memory")
    assert interp.exec(
        """
        import tpshare
        out.send((n * 2, text.upper(), bytes(view), tpshare.interpreter_id()))
        mem.send(bytearray(b"worker memory"))
        """,
        out=ch, mem=mem, n=21, text="abc", view=buf) is None
    assert ch.recv(timeout=10) == (42, "ABC", b"main memory", interp.id)
    mv = mem.recv(timeout=10)
    assert bytes(mv) == b"worker memory"
    mv.release()
    # The names stay bound in __main__ for later code.
    interp.exec("out.send(n + 1); del view")
    assert ch.recv(timeout=10) == 22


def test_submit_exec_returns_a_future(interp):
    ok = interp.submit_exec("x = 1")
    bad = interp.submit_exec("x = undefined_name")
    assert ok.result() is None
    err = bad.exception()
    assert isinstance(err, tpshare.RemoteError)
    assert err.type_name == "NameError"


def test_exec_error_is_a_remote_error(interp):
    with pytest.raises(tpshare.RemoteError) as info:
        interp.exec("def f():\n    return 1 / 0\nf()\n")
    err = info.value
    assert isinstance(err, tpshare.Error)
    assert (err.type_name, err.message) == ("ZeroDivisionError",
                                            "division by zero")
    assert str(err) == "ZeroDivisionError: division by zero"
    assert err.interpreter_id == interp.id
    assert 'File "<tpshare exec>", line 2, in f' in err.remote_traceback
    assert "return 1 / 0" in err.remote_traceback
    assert "_worker.py" not in err.remote_traceback
    assert "_interpreters.py" not in err.remote_traceback
    assert err.__notes__ == [f"Remote traceback (interpreter {interp.id}):\n"
                             + err.remote_traceback.rstrip()]
    # sys.exit() in the code is an error like any other.
    with pytest.raises(tpshare.RemoteError, match="SystemExit: 3"):
        interp.exec("import sys; sys.exit(3)")
    # The interpreter is still usable.
    assert interp.call(pow, 3, 2).result() == 9


def test_call_error_is_a_remote_error(interp, helpers):
    err = interp.call(helpers.boom, "bad input").exception()
    assert isinstance(err, tpshare.RemoteError)
    assert err.type_name == "tpshare_test_helpers.Boom"
    assert err.message == "bad input"
    assert "in boom" in err.remote_traceback
    assert "raise Boom(message)" in err.remote_traceback
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.remote_traceback) == (
        tpshare.RemoteError, str(err), err.remote_traceback)
    assert interp.call(helpers.add, 2, 2).result() == 4


def test_unshareable_argument_raises_before_anything_runs(interp, helpers):
    ch = tpshare.Channel()
    with pytest.raises(tpshare.NotShareableError,
                       match=r"argument 1 of record\(\): objects of type "
                             r"'list' are not shareable"):
        interp.call(helpers.record, ch, [1])
    with pytest.raises(tpshare.NotShareableError,
                       match=r"argument 'value' of record\(\)"):
        interp.call(helpers.record, ch, value=(1, {2}))
    with pytest.raises(tpshare.NotShareableError, match="shared value 'x'"):
        interp.exec("out.send(1)", out=ch, x={})
    with pytest.raises(TypeError):   # NotShareableError is a TypeError
        interp.submit_exec("out.send(2)", out=ch, y=[])
    # Nothing ran and nothing was queued: the next job is the first one.
    assert interp.call(helpers.record, ch, "first").result() == "first"
    assert ch.recv(timeout=0) == "first"
    with pytest.raises(tpshare.ChannelEmpty):
        ch.recv(timeout=0)


def test_functions_must_be_importable(interp):
    def local():
        pass

    for func in (lambda: 1, local):
        with pytest.raises(tpshare.NotShareableError, match="importable"):
            interp.call(func)
    with pytest.raises(TypeError, match="not callable"):
        interp.call(42)
    with pytest.raises(TypeError, match="must be a str"):
        interp.exec(b"x = 1")


def test_unshareable_result(interp, helpers):
    f = interp.call(helpers.unshareable)
    with pytest.raises(tpshare.NotShareableError,
                       match=r"the result of unshareable\(\) is not "
                             r"shareable: objects of type 'list'"):
        f.result()
    assert interp.call(helpers.add, 1).result() == 1


# ---------------------------------------------------------------------------
# Closing.


@pytest.mark.parametrize("thread", THREAD_MODES)
def test_closed_interpreter_raises_a_clear_error(helpers, thread):
    it = tpshare.Interpreter(thread=thread)
    iid = it.id
    it.close()
    it.close()   # idempotent
    assert it.closed
    assert repr(it).endswith(" closed>")
    for submit in (lambda: it.call(helpers.add, 1),
                   lambda: it.exec("pass"),
                   lambda: it.submit_exec("pass")):
        with pytest.raises(tpshare.InterpreterClosed,
                           match=f"interpreter {iid} is closed") as info:
            submit()
        assert isinstance(info.value, RuntimeError)
        assert isinstance(info.value, tpshare.Error)
    assert it not in tpshare.list_interpreters()
    assert iid not in tpshare.stats()
    assert iid not in tpshare._tpshare._interp_list()
    assert iid not in stdlib_ids()


def test_close_waits_for_running_work(helpers):
    it = tpshare.Interpreter()
    started, gate = tpshare.Channel(), tpshare.Channel()
    f = it.call(helpers.wait_gate, started, gate)
    assert started.recv(timeout=10) == it.id
    closer = threading.Thread(target=it.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not f.done()   # the gate is still shut
    gate.send("done")
    closer.join(30)
    assert not closer.is_alive()
    assert f.result() == "done"
    assert it.closed and it.id not in tpshare.stats()


def test_close_timeout_leaves_the_interpreter_usable(helpers):
    it = tpshare.Interpreter()
    started, gate = tpshare.Channel(), tpshare.Channel()
    f = it.call(helpers.wait_gate, started, gate)
    started.recv(timeout=10)
    with pytest.raises(TimeoutError, match="1 job"):
        it.close(timeout=0.05)
    assert not it.closed
    g = it.call(helpers.add, 5, 5)
    gate.send("go")
    assert (f.result(), g.result()) == ("go", 10)
    it.close()


@pytest.mark.parametrize("thread", THREAD_MODES)
def test_close_refuses_while_views_are_held(helpers, thread):
    """A view of the interpreter's memory pins it."""
    it = tpshare.Interpreter(thread=thread)
    mv = it.call(helpers.blob, 64).result()
    assert isinstance(mv, memoryview) and bytes(mv) == b"x" * 64
    assert tpshare.stats()[it.id]["remote"] == 1
    with pytest.raises(tpshare.InterpreterBusy,
                       match=f"interpreter {it.id}: 1") as info:
        it.close()
    assert info.value.held == {it.id: 1}
    assert not it.closed
    assert it.call(helpers.add, 1, 1).result() == 2   # still usable
    mv.release()
    it.close()
    assert it.id not in tpshare.stats()


def test_idle_worker_runs_releases_at_once(helpers):
    """A worker waiting for work is parked in Channel.recv() as a
    watcher of its release list, so a view released elsewhere is released
    in it right away, with no work sent to it."""
    with tpshare.Interpreter() as it:
        mv = it.call(helpers.blob, 1000).result()
        assert tpshare.stats()[it.id] == {"exports": 1, "remote": 1,
                                          "pending": 0}
        sent = it._work.stats()["sent"]
        start = time.monotonic()
        mv.release()
        del mv
        assert wait_until(lambda: tpshare.stats()[it.id]["exports"] == 0)
        elapsed = time.monotonic() - start
        assert tpshare.stats()[it.id] == {"exports": 0, "remote": 0,
                                          "pending": 0}, elapsed
        assert it._work.stats()["sent"] == sent   # no work was sent


def test_list_interpreters_and_context_manager(helpers):
    assert tpshare.list_interpreters() == []
    with tpshare.Interpreter() as a, tpshare.Interpreter(thread=False) as b:
        assert tpshare.list_interpreters() == [a, b]
        assert a.id < b.id
    assert a.closed and b.closed
    assert tpshare.list_interpreters() == []


# ---------------------------------------------------------------------------
# Pools.


def test_pool_submit_and_map(helpers):
    with tpshare.Pool(2) as pool:
        assert len(set(pool.ids)) == 2
        assert set(pool.ids) <= {i.id for i in tpshare.list_interpreters()}
        assert list(pool.map(pow, range(10), [3] * 10)) == [
            i**3 for i in range(10)]
        assert list(pool.map(helpers.add, range(10), range(10),
                             chunksize=3)) == [2 * i for i in range(10)]
        assert pool.submit(helpers.add, 1, c=2).result() == 3
        err = pool.submit(helpers.boom, "in a pool").exception()
        assert isinstance(err, tpshare.RemoteError)
        assert err.interpreter_id in pool.ids
        member = tpshare.list_interpreters()[0]
        with pytest.raises(TypeError, match="belongs to a Pool"):
            member.call(pow, 1, 1)
    assert pool.closed
    with pytest.raises(tpshare.InterpreterClosed):
        pool.submit(pow, 2, 2)
    assert tpshare.list_interpreters() == []
    assert not set(pool.ids) & set(tpshare.stats())


def test_pool_runs_jobs_in_parallel(helpers):
    """Each job waits for the other: they finish only if both run at once,
    in two interpreters."""
    a, b = tpshare.Channel(), tpshare.Channel()
    with tpshare.Pool(2) as pool:
        f1 = pool.submit(helpers.rendezvous, a, b, "one")
        f2 = pool.submit(helpers.rendezvous, b, a, "two")
        (id1, got1), (id2, got2) = f1.result(60), f2.result(60)
        assert (got1, got2) == ("two", "one")
        assert {id1, id2} == set(pool.ids)


def test_pool_refuses_to_close_while_views_are_held(helpers):
    pool = tpshare.Pool(2)
    mv = pool.submit(helpers.blob, 10).result()
    with pytest.raises(tpshare.InterpreterBusy) as info:
        pool.shutdown()
    owner, = info.value.held
    assert owner in pool.ids and info.value.held[owner] == 1
    assert not pool.closed
    assert pool.submit(pow, 2, 2).result() == 4
    mv.release()
    pool.shutdown()
    assert pool.closed


def test_pool_shutdown_cancels_queued_jobs(helpers):
    pool = tpshare.Pool(1)
    started, gate = tpshare.Channel(), tpshare.Channel()
    running = pool.submit(helpers.wait_gate, started, gate)
    started.recv(timeout=10)
    queued = [pool.submit(pow, 2, i) for i in range(3)]
    closer = threading.Thread(
        target=lambda: pool.shutdown(cancel_futures=True))
    closer.start()
    assert wait_until(lambda: all(f.cancelled() for f in queued))
    gate.send("finished")
    closer.join(30)
    assert running.result() == "finished"
    assert pool.closed


def test_errors():
    assert issubclass(tpshare.RemoteError, tpshare.Error)
    assert issubclass(tpshare.InterpreterBusy, tpshare.Error)
    assert issubclass(tpshare.InterpreterClosed, tpshare.Error)
    assert issubclass(tpshare.InterpreterClosed, RuntimeError)
    assert repr(tpshare.RemoteError("ValueError", "x")).startswith(
        "RemoteError(")
    assert tpshare.RemoteError.__module__ == "tpshare"


# ---------------------------------------------------------------------------
# Coexistence with the standard library's interpreters.


def test_coexists_with_stdlib_interpreters(sub, helpers):
    with tpshare.Interpreter() as it:
        assert {it.id, int(sub.id)} <= stdlib_ids()
        inbox, outbox = tpshare.Channel(), tpshare.Channel()
        sub.put("inbox", inbox)
        f = it.call(helpers.relay, inbox, outbox)
        sub.run("inbox.send(('from stdlib', tpshare.interpreter_id()))")
        f.result(30)
        assert outbox.recv(timeout=10) == (("from stdlib", int(sub.id)),
                                           it.id)
        # A tpshare interpreter made inside a stdlib one.
        sub.put("out", outbox)
        sub.run(
            """
            with tpshare.Interpreter() as inner:
                out.send((inner.call(tpshare.interpreter_id).result(),
                          tpshare.interpreter_id()))
            assert tpshare.list_interpreters() == []
            """
        )
        inner_id, where = outbox.recv(timeout=10)
        assert where == int(sub.id)
        assert inner_id not in (0, int(sub.id), it.id)
        assert inner_id not in tpshare.stats()
        sub.run("del inbox, out")


# ---------------------------------------------------------------------------
# Crash, exit and leak scenarios, in child processes.


@pytest.mark.parametrize("thread", THREAD_MODES)
def test_interpreters_made_inside_an_interpreter(thread):
    """The inner ones, one closed and one left open, end with the outer
    one, silently (3.13's threading treats a worker's thread as a dummy
    thread whose cleanup must run before the interpreter ends)."""
    r = run_child(
        f"""
        import tpshare
        out = tpshare.Channel()
        code = '''
        import threading, tpshare
        threading.current_thread()
        with tpshare.Interpreter() as closed:
            closed.call(tpshare.interpreter_id).result()
        left_open = tpshare.Interpreter()
        out.send((tpshare.interpreter_id(),
                  left_open.call(tpshare.interpreter_id).result()))
        del out
        '''
        with tpshare.Interpreter(thread={thread}) as outer:
            outer.exec(code, out=out)
            outer_id, inner_id = out.recv(timeout=30)
            assert outer_id == outer.id and inner_id not in (0, outer_id)
        assert set(tpshare.stats()) == {{0}}, tpshare.stats()
        assert tpshare._tpshare._interp_list() == []
        print("OK")
        """, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "OK\n"
    assert r.stderr == ""


EXIT_CASES = {
    "idle": """
        a = tpshare.Interpreter()
        b = tpshare.Interpreter(thread=False)
        p = tpshare.Pool(2)
        """,
    "running": """
        a = tpshare.Interpreter()
        f = a.call(h.spin, 600)
        """,
    "queued": """
        a = tpshare.Interpreter()
        fs = [a.call(h.spin, 600) for _ in range(5)]
        """,
    "pool": """
        p = tpshare.Pool(2)
        fs = [p.submit(h.spin, 600) for _ in range(6)]
        """,
    "view-held": """
        a = tpshare.Interpreter()
        mv = a.call(h.blob, 100).result()
        fut = a.call(h.blob, 200)
        fut.result()

        def late():
            try:
                mv.tobytes()
            except ValueError:
                print("late use of the view: released")
        atexit.register(late)
        """,
    "caller-thread-daemon": """
        b = tpshare.Interpreter(thread=False)
        started = tpshare.Channel()

        def run():
            try:
                b.exec("started.send(1)\\nwhile True: pass", started=started)
            except tpshare.Error:
                pass
        threading.Thread(target=run, daemon=True).start()
        started.recv(timeout=30)
        """,
    "interrupt-swallowed": """
        a = tpshare.Interpreter()
        started = tpshare.Channel()
        f = a.call(h.spin_after_a_callback, started, 600)
        started.recv(timeout=30)
        """,
    "made-in-a-thread": """
        box = []
        t = threading.Thread(target=lambda: box.append(tpshare.Interpreter()))
        t.start(); t.join()
        f = box[0].call(h.spin, 600)
        """,
}


@pytest.mark.parametrize("case", list(EXIT_CASES))
def test_process_exit_with_interpreters_alive(case, helper_env):
    """Exit neither hangs nor crashes: queued work is cancelled, running
    work interrupted, every interpreter ended."""
    r = run_child(
        "import atexit, threading, time, tpshare\n"
        "import tpshare_test_helpers as h\n"
        + textwrap.dedent(EXIT_CASES[case])
        + "\nprint('exiting with', len(tpshare.list_interpreters()),"
          " 'interpreters', flush=True)\n",
        timeout=120, env=helper_env)
    assert r.returncode == 0, r.stderr
    assert "exiting with" in r.stdout
    assert r.stderr == ""
    if case == "view-held":
        assert "late use of the view: released" in r.stdout


def test_process_exit_with_a_pinned_view(helper_env):
    """A view pinned by an export of its own cannot be released at exit:
    the interpreter is ended without waiting for it (3.13 leaves it to the
    runtime; 3.12, which cannot, ends it with the process marked as
    exiting); the memory stays allocated until the process ends."""
    r = run_child(
        """
        import numpy, tpshare, tpshare_test_helpers as h
        a = tpshare.Interpreter()
        arr = numpy.frombuffer(a.call(h.blob, 100).result(), dtype='u1')
        print('exiting', arr.sum(), flush=True)
        """, timeout=120, env=helper_env)
    assert r.returncode == 0, r.stderr
    assert "exiting 12000" in r.stdout


def test_ctrl_c_while_waiting_for_a_result(helper_env):
    r = run_child(
        """
        import os, signal, threading, time, tpshare
        import tpshare_test_helpers as h

        def interrupt_soon():
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

        it = tpshare.Interpreter()
        f = it.call(h.spin, 600)
        interrupt_soon()
        try:
            f.result()
        except KeyboardInterrupt:
            print("result(): KeyboardInterrupt; job done:", f.done())
        interrupt_soon()
        try:
            it.exec("while True: pass")
        except KeyboardInterrupt:
            print("exec(): KeyboardInterrupt")
        """, timeout=120, env=helper_env)
    assert r.returncode == 0, r.stderr
    assert "result(): KeyboardInterrupt; job done: False" in r.stdout
    assert "exec(): KeyboardInterrupt" in r.stdout


def test_many_interpreters_in_sequence_and_concurrently(helper_env):
    """200 made and closed one after the other, 50 at once from threads:
    nothing left behind, and resident memory grows no more than CPython's
    own per-interpreter cost (3.12 and 3.13 never free an isolated
    interpreter's allocator arenas), measured with stdlib interpreters
    doing the same imports in the same process."""
    sequential = 200
    r = run_child(
        f"""
        import threading, tpshare
        from support import _create, _run, _stdinterp

        def rss_kib():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        def stdlib_one():
            iid = _create()
            _run(iid, "import tpshare._interpreters")
            _stdinterp.destroy(iid)

        def tpshare_one(thread):
            with tpshare.Interpreter(thread=thread) as it:
                assert it.call(tpshare.interpreter_id).result() == it.id

        for i in range(10):          # warm up
            stdlib_one(); tpshare_one(i % 2 == 0)
        before = rss_kib()
        for _ in range(50):
            stdlib_one()
        stdlib_growth = (rss_kib() - before) / 50
        before = rss_kib()
        for i in range({sequential}):
            tpshare_one(i % 2 == 0)
        tpshare_growth = (rss_kib() - before) / {sequential}

        ids = []
        def concurrent_one():
            with tpshare.Interpreter() as it:
                ids.append((it.id, it.call(tpshare.interpreter_id).result()))
        threads = [threading.Thread(target=concurrent_one) for _ in range(50)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len(ids) == 50 and all(a == b for a, b in ids), ids
        assert len(set(ids)) == 50

        assert tpshare.list_interpreters() == []
        assert tpshare._tpshare._interp_list() == []
        assert set(tpshare.stats()) == {{tpshare.interpreter_id()}}, \
            tpshare.stats()
        assert threading.active_count() == 1, threading.enumerate()
        print(f"RSS per interpreter: stdlib {{stdlib_growth:.0f}} KiB, "
              f"tpshare {{tpshare_growth:.0f}} KiB")
        print("GROWTH", stdlib_growth, tpshare_growth)
        """, timeout=600, env=helper_env)
    assert r.returncode == 0, r.stderr
    print(r.stdout.splitlines()[0])   # the figures, with pytest -s
    stdlib_growth, tpshare_growth = map(
        float, r.stdout.split("GROWTH")[1].split())
    if not SANITIZED:   # a sanitizer's own memory makes RSS meaningless
        assert tpshare_growth <= stdlib_growth * 1.25 + 256, r.stdout


def test_functions_of_the_main_script(tmp_path):
    """A function defined in the script being run is found by importing
    the script in the worker under another name, as multiprocessing's
    spawn does: its `if __name__ == '__main__':` block does not run
    there."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(
        """
        import tpshare

        def triple(x):
            return 3 * x

        print("module body in", tpshare.interpreter_id(), flush=True)

        if __name__ == "__main__":
            with tpshare.Interpreter() as it:
                print("result", it.call(triple, 14).result(), flush=True)
        """))
    import subprocess
    r = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("result 42") == 1
    assert "module body in 0" in lines
    assert len([l for l in lines if l.startswith("module body in")]) == 2
