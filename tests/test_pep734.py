"""tpshare.interpreters (PEP 734's API) and tpshare.InterpreterPoolExecutor,
with real isolated interpreters; and the errors of scripts that use
interpreters without a file or without a __main__ guard."""

import concurrent.futures
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest

import tpshare
from tpshare import interpreters
from support import run_child

HERE = os.path.dirname(os.path.abspath(__file__))


# Functions the interpreters call (found there by module and name).

def add(a, b=0):
    return a + b


def echo(*args, **kwargs):
    return args, kwargs


def fail(msg):
    raise KeyError(msg)


class Point:
    """Not shareable: crosses pickled."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x,
                                                                  other.y)


def double_point(p):
    return Point(p.x * 2, p.y * 2)


def my_id():
    return tpshare.interpreter_id()


def put_into(q, items):
    for item in items:
        q.put(item)
    return q.qsize()


def get_from(q, timeout):
    return q.get(timeout=timeout)


def wait_event_then_get(q):
    return q.get()


def lookup(qid):
    return interpreters.Queue(qid).get(timeout=5)


def unpicklable():
    return threading.Lock()


_initialized = []


def init_worker(tag):
    _initialized.append(tag)


def initialized():
    return tuple(_initialized)


def broken_init():
    raise OSError("no such resource")


def slow_square(x):
    import time
    time.sleep(0.05)
    return x * x


@pytest.fixture(scope="module")
def interp():
    i = interpreters.create()
    yield i
    i.close()


# ---------------------------------------------------------------------------
# Lifecycle.


def test_create_list_close_and_whence():
    i = interpreters.create()
    assert i.whence == "tpshare"
    assert isinstance(i.id, int) and i.id > 0
    assert i in interpreters.list_all()
    assert interpreters.Interpreter(i.id) is i
    assert repr(i) == f"Interpreter({i.id})"
    assert not i.is_running()
    assert i.call(my_id) == i.id
    i.close()
    assert i.id not in [x.id for x in interpreters.list_all()]
    with pytest.raises(interpreters.InterpreterNotFoundError):
        i.close()
    with pytest.raises(interpreters.InterpreterNotFoundError):
        i.exec("pass")
    with pytest.raises(interpreters.InterpreterNotFoundError):
        interpreters.Interpreter(10 ** 6)


def test_main_and_current():
    main = interpreters.get_main()
    assert main.id == 0 and main.whence == "runtime init"
    assert interpreters.get_current() is main
    assert main.is_running()
    with pytest.raises(interpreters.InterpreterError, match="current"):
        main.close()
    with pytest.raises(TypeError, match="id must be an int"):
        interpreters.Interpreter("1")


def test_an_interpreter_tpshare_did_not_make_is_described_only():
    from tpshare import _stdinterp
    with _stdinterp.Subinterpreter() as sub:
        other = interpreters.Interpreter(int(sub.id))
        assert other.whence != "tpshare"
        assert other.whence in ("_interpreters module", "unknown")
        assert not other.is_running()
        with pytest.raises(interpreters.InterpreterError,
                           match="not made by tpshare"):
            other.close()
        with pytest.raises(interpreters.InterpreterError,
                           match="not made by tpshare"):
            other.exec("pass")


def test_get_current_inside_and_pickling(interp):
    interp.exec(textwrap.dedent("""
        from tpshare import interpreters
        cur = interpreters.get_current()
        assert cur.id != 0 and interpreters.get_main().id == 0
        assert cur.is_running() and cur.whence == "tpshare"
        assert interpreters.get_main().whence == "runtime init"
    """))
    assert pickle.loads(pickle.dumps(interp)) is interp
    assert interp == interpreters.Interpreter(interp.id)
    assert hash(interp) == hash(interp.id)


def test_created_interpreters_have_their_own_gil(interp):
    try:
        import _interpreters
    except ImportError:   # 3.12 cannot tell an interpreter's config
        _interpreters = None
    if _interpreters is not None:
        config = _interpreters.get_config(interp.id)
        assert config.gil == "own"
        assert config.use_main_obmalloc is False
    assert interp.call(my_id) == interp.id


def test_close_refuses_a_running_interpreter():
    i = interpreters.create()
    q = interpreters.create_queue()
    t = i.call_in_thread(wait_event_then_get, q)
    try:
        for _ in range(500):
            if i.is_running():
                break
            threading.Event().wait(0.01)
        assert i.is_running()
        with pytest.raises(interpreters.InterpreterError, match="running"):
            i.close()
    finally:
        q.put("go")
        t.join(60)
    assert not i.is_running()
    i.close()


# ---------------------------------------------------------------------------
# prepare_main, exec, call.


def test_prepare_main_with_every_shareable_kind(interp):
    ch = tpshare.Channel()
    q = tpshare.Queue()
    iq = interpreters.create_queue()
    data = bytearray(b"shared memory")
    interp.prepare_main(
        {"n": None, "t": True, "i": 1 << 70, "f": 2.5, "s": "text",
         "b": b"bytes", "tup": (1, ("a", None), 3.0)},
        ch=ch, q=q, iq=iq, mv=memoryview(data))
    interp.exec(textwrap.dedent("""
        assert n is None and t is True and i == 1 << 70 and f == 2.5
        assert s == "text" and b == b"bytes"
        assert tup == (1, ("a", None), 3.0)
        ch.send(("ch", bytes(mv)))
        q.put("q")
        iq.put(("iq", type(iq).__name__))
        ro = mv.readonly
        del mv
    """))
    assert ch.recv(timeout=5) == ("ch", b"shared memory")
    assert q.get(timeout=5) == "q"
    assert iq.get(timeout=5) == ("iq", "Queue")
    # A view of this interpreter's memory, read-only there.
    interp.exec("assert ro is True")


def test_prepare_main_pickles_what_cannot_be_shared(interp):
    interp.prepare_main(p=Point(1, 2), d={"k": [1, 2]})
    interp.exec("assert (p.x, p.y) == (1, 2) and d == {'k': [1, 2]}")
    with pytest.raises(interpreters.NotShareableError, match="value 'lock'"):
        interp.prepare_main(lock=threading.Lock())


def test_call_with_arguments_and_results(interp):
    assert interp.call(add, 2, b=40) == 42
    assert interp.call(echo, 1, "x", k=(2, 3)) == ((1, "x"), {"k": (2, 3)})
    assert interp.call(double_point, Point(1, 2)) == Point(2, 4)
    assert interp.call(echo, [1, 2]) == (([1, 2],), {})
    with pytest.raises(interpreters.NotShareableError, match="argument 0"):
        interp.call(echo, threading.Lock())
    with pytest.raises(tpshare.NotShareableError, match="pickling"):
        interp.call(unpicklable)
    with pytest.raises(interpreters.NotShareableError, match="importable"):
        interp.call(lambda: 1)


def test_call_in_thread(interp):
    q = interpreters.create_queue()
    t = interp.call_in_thread(put_into, q, ("a", "b"))
    assert isinstance(t, threading.Thread)
    t.join(60)
    assert not t.is_alive()
    assert [q.get(timeout=5), q.get(timeout=5)] == ["a", "b"]


def test_execution_failed_carries_the_remote_exception(interp):
    with pytest.raises(interpreters.ExecutionFailed) as info:
        interp.call(fail, "missing")
    exc = info.value
    assert isinstance(exc, interpreters.InterpreterError)
    ei = exc.excinfo
    assert ei.type.__name__ == "KeyError"
    assert ei.type.__qualname__ == "KeyError"
    assert ei.type.__module__ == "builtins"
    assert ei.msg == "'missing'"
    assert ei.formatted == "KeyError: 'missing'"
    assert "in fail" in ei.errdisplay and "raise KeyError" in ei.errdisplay
    assert "Uncaught in the interpreter" in str(exc)
    with pytest.raises(interpreters.ExecutionFailed) as info:
        interp.exec("class Custom(Exception): pass\nraise Custom('boom')")
    ei = info.value.excinfo
    assert (ei.type.__name__, ei.type.__module__, ei.msg) == (
        "Custom", "__main__", "boom")
    assert ei.formatted == "Custom: boom"


def test_exec_argument_types(interp):
    with pytest.raises(TypeError, match="code must be a str"):
        interp.exec(b"pass")
    with pytest.raises(TypeError, match="names must be str"):
        interp.prepare_main({1: 2})


# ---------------------------------------------------------------------------
# Queues.


def test_queue_blocking_timeouts_and_maxsize(interp):
    q = interpreters.create_queue(2)
    assert (q.maxsize, q.empty(), q.full(), q.qsize()) == (2, True, False, 0)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(interpreters.QueueFull):
        q.put(3, timeout=0.05)
    with pytest.raises(interpreters.QueueFull):
        q.put(3, False)
    assert (q.get(), q.get_nowait()) == (1, 2)
    with pytest.raises(interpreters.QueueEmpty):
        q.get(timeout=0.05)
    with pytest.raises(interpreters.QueueEmpty):
        q.get_nowait()
    # A real blocking get in the other interpreter, woken by a put here.
    t = threading.Thread(target=lambda: q.put("late"))
    timer = threading.Timer(0.1, t.start)
    timer.start()
    assert interp.call(get_from, q, 30.0) == "late"
    timer.join()
    t.join()


@pytest.mark.parametrize("maxsize", [-1, 0, -7])
def test_queue_zero_or_negative_maxsize_is_unbounded(maxsize):
    q = interpreters.create_queue(maxsize)
    assert q.maxsize == maxsize
    for i in range(100):
        q.put_nowait(i)
    assert not q.full() and q.qsize() == 100
    assert interpreters.create_queue().maxsize == -1


def test_queue_lookup_by_id_and_identity(interp):
    q = interpreters.create_queue()
    assert interpreters.Queue(q.id) is q
    assert repr(q) == f"Queue({q.id})"
    assert pickle.loads(pickle.dumps(q)) is q
    q2 = interpreters.create_queue()
    assert q2 != q and q2.id != q.id
    with pytest.raises(interpreters.QueueNotFoundError):
        interpreters.Queue(10 ** 9)
    with pytest.raises(TypeError):
        interpreters.Queue("1")
    q.put("by id")
    assert interp.call(lookup, q.id) == "by id"
    # A queue crosses as itself.
    interp.prepare_main(q=q)
    interp.exec("from tpshare import interpreters as I\n"
                "assert type(q) is I.Queue and I.Queue(q.id) is q\n"
                "q.put(q)")
    assert q.get(timeout=5) is q


def test_queue_pickles_what_cannot_be_shared_and_refuses_the_rest():
    q = interpreters.create_queue()
    q.put(Point(3, 4))
    q.put({"a": [1]})
    assert q.get() == Point(3, 4) and q.get() == {"a": [1]}
    with pytest.raises(interpreters.NotShareableError):
        q.put(threading.Lock())
    assert interpreters.is_shareable((1, "a", b"b", None))
    assert not interpreters.is_shareable([1])


@pytest.mark.parametrize("policy", [interpreters.UNBOUND,
                                    interpreters.UNBOUND_ERROR,
                                    interpreters.UNBOUND_REMOVE], ids=repr)
def test_queue_unbound_items_follow_the_policy(policy):
    q = interpreters.create_queue(unbounditems=policy)
    assert q.unbounditems is policy
    i = interpreters.create()
    i.prepare_main(q=q)
    # A view of the interpreter's memory cannot outlive it; a str is a
    # copy and is delivered anyway (CPython would drop it too).
    i.exec("own = bytearray(b'sub memory')\n"
           "q.put('first')\nq.put(memoryview(own))\nq.put('last')")
    i.close()
    assert q.get_nowait() == "first"
    if policy is interpreters.UNBOUND:
        assert q.get_nowait() is interpreters.UNBOUND
    elif policy is interpreters.UNBOUND_ERROR:
        with pytest.raises(interpreters.ItemInterpreterDestroyed):
            q.get_nowait()
    assert q.get_nowait() == "last"
    assert q.qsize() == 0


def test_queue_put_rejects_a_float_block():
    for q in (interpreters.create_queue(), tpshare.Queue()):
        with pytest.raises(TypeError, match="block must be a bool"):
            q.put(1, 0.2)
        with pytest.raises(TypeError, match="block must be a bool"):
            q.get(0.2)
        assert q.qsize() == 0
        q.put(1, True, 0.2)
        assert q.get(True, 0.2) == 1


def test_not_shareable_error_is_caught_by_both_forms():
    with pytest.raises(tpshare.NotShareableError):
        tpshare.share([1])
    with pytest.raises(TypeError):
        tpshare.share([1])
    assert interpreters.NotShareableError is tpshare.NotShareableError
    try:
        import _interpreters
    except ImportError:   # 3.12: CPython has no NotShareableError
        return
    with pytest.raises(_interpreters.NotShareableError):
        tpshare.share([1])
    assert issubclass(interpreters.InterpreterError,
                      _interpreters.InterpreterError)


# ---------------------------------------------------------------------------
# InterpreterPoolExecutor.


def test_executor_submit_map_and_shutdown():
    with tpshare.InterpreterPoolExecutor(max_workers=2) as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        assert ex.submit(add, 1, b=2).result(60) == 3
        assert ex.submit(double_point, Point(1, 1)).result(60) == Point(2, 2)
        assert list(ex.map(add, range(6), range(6), timeout=60)) == [
            0, 2, 4, 6, 8, 10]
        assert list(ex.map(add, range(7), chunksize=3)) == list(range(7))
        ids = {ex.submit(my_id).result(60) for _ in range(8)}
        assert ids <= set(ex.ids) and 0 not in ids
        with pytest.raises(tpshare.RemoteError, match="KeyError"):
            ex.submit(fail, "x").result(60)
    with pytest.raises(RuntimeError):
        ex.submit(add, 1)


def test_executor_initializer_runs_in_each_worker():
    with tpshare.InterpreterPoolExecutor(
            2, initializer=init_worker, initargs=("ready",)) as ex:
        results = {ex.submit(initialized).result(60) for _ in range(4)}
    assert results == {("ready",)}


def test_executor_broken_initializer_breaks_the_pool():
    ex = tpshare.InterpreterPoolExecutor(1, initializer=broken_init)
    try:
        fut = ex.submit(add, 1, 2)
        with pytest.raises(tpshare.BrokenInterpreterPool) as info:
            fut.result(60)
        assert isinstance(info.value, concurrent.futures.BrokenExecutor)
        assert "no such resource" in str(info.value)
        with pytest.raises(tpshare.BrokenInterpreterPool):
            ex.submit(add, 1, 2)
    finally:
        ex.shutdown()


def test_executor_shutdown_cancel_futures():
    ex = tpshare.InterpreterPoolExecutor(1)
    fs = [ex.submit(slow_square, i) for i in range(20)]
    ex.shutdown(wait=True, cancel_futures=True)
    done = [f for f in fs if not f.cancelled()]
    assert fs[-1].cancelled()
    assert all(f.result() == fs.index(f) ** 2 for f in done)


def test_executor_and_pool_argument_errors():
    with pytest.raises(TypeError, match="max_workers"):
        tpshare.InterpreterPoolExecutor("2")
    with pytest.raises(ValueError, match="max_workers"):
        tpshare.InterpreterPoolExecutor(0)
    with pytest.raises(TypeError, match="workers must be an int"):
        tpshare.Pool(workers="2")
    with pytest.raises(TypeError, match="initializer"):
        tpshare.InterpreterPoolExecutor(1, initializer=3)
    with pytest.raises(TypeError, match="thread_name_prefix"):
        tpshare.InterpreterPoolExecutor(1, thread_name_prefix=3)
    with tpshare.Pool(1) as pool:
        with pytest.raises(TypeError, match="timeout must be a number"):
            pool.close(timeout="x")
        with pytest.raises(TypeError, match="chunksize"):
            pool.map(add, [1], chunksize="2")
    i = tpshare.Interpreter()
    with pytest.raises(TypeError, match="timeout must be a number"):
        i.close(timeout="x")
    i.close()


# ---------------------------------------------------------------------------
# Scripts: from standard input, without a __main__ guard, without .py.

_SCRIPT = """\
import tpshare
from tpshare import interpreters

def f(x):
    return x + 1

{body}
"""


def _run_script(tmp_path, body, *, stdin=False, name="script.py"):
    code = _SCRIPT.format(body=textwrap.dedent(body))
    args = [sys.executable]
    if stdin:
        args.append("-")
    else:
        path = tmp_path / name
        path.write_text(code)
        args.append(str(path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(args, input=code if stdin else None,
                          capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env=env)


def test_script_from_stdin_gets_a_clear_error(tmp_path):
    # Was: AttributeError: 'NoneType' object has no attribute 'loader',
    # from the worker.
    r = _run_script(tmp_path, """
        for make in (interpreters.create, tpshare.Interpreter):
            try:
                make().call(f, 1)
            except tpshare.NotShareableError as exc:
                print("clear:", exc)
    """, stdin=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("has no file") == 2, r.stdout
    assert "standard input" in r.stdout
    assert "loader" not in r.stdout + r.stderr


def test_script_without_main_guard_gets_a_clear_error(tmp_path):
    # Was: ModuleNotFoundError: No module named '__tpshare_main__', from
    # the script's top level run again in the worker.
    r = _run_script(tmp_path, """
        try:
            interpreters.create().call(f, 1)
        except interpreters.ExecutionFailed as exc:
            print("clear:", exc.excinfo.type.__name__, exc.excinfo.msg)
        with tpshare.Interpreter() as it:
            try:
                it.call(f, 1).result()
            except tpshare.RemoteError as exc:
                print("clear:", exc.type_name, exc.message)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("clear: RuntimeError") == 2, r.stdout
    assert '__name__ == "__main__"' in r.stdout
    assert "__tpshare_main__" not in r.stdout + r.stderr


def test_guarded_script_without_py_suffix_works(tmp_path):
    r = _run_script(tmp_path, """
        if __name__ == "__main__":
            print("result:", interpreters.create().call(f, 41))
            with tpshare.InterpreterPoolExecutor(1) as ex:
                print("pool:", ex.submit(f, 1).result())
    """, name="script_without_suffix")
    assert r.returncode == 0, r.stderr
    assert "result: 42" in r.stdout and "pool: 2" in r.stdout


def test_unreferenced_interpreters_end_at_exit():
    r = run_child("""
        from tpshare import interpreters
        import test_pep734 as t
        i = interpreters.create()
        assert i.call(t.add, 1, 2) == 3
        del i
        q = interpreters.create_queue()
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# ---------------------------------------------------------------------------
# Types.


def _mypy(tmp_path, *args):
    pytest.importorskip("mypy")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), *map(str, args)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))


def test_mypy_strict_accepts_the_python_layer(tmp_path):
    # The installed package's own modules (the benchmarks aside).
    modules = ["tpshare", "tpshare.interpreters", "tpshare._interpreters",
               "tpshare._executor", "tpshare._worker", "tpshare._stdinterp",
               "tpshare._include"]
    r = _mypy(tmp_path, *[a for m in modules for a in ("-m", m)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_accepts_the_public_api(tmp_path):
    r = _mypy(tmp_path, os.path.join(HERE, "typing", "pep734_usage.py"))
    assert "tpshare" not in r.stdout, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    # And the types are real, not Any: a wrong one is reported.
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import tpshare
        from tpshare import interpreters

        def square(x: int) -> int:
            return x * x

        s: str = interpreters.create().call(square, 3)
        f: str = tpshare.InterpreterPoolExecutor().submit(square, 2).result()
        interpreters.create_queue(maxsize="3")
    """))
    r = _mypy(tmp_path, bad)
    assert r.returncode == 1
    assert r.stdout.count("error:") == 3, r.stdout


# ---------------------------------------------------------------------------
# The benchmark: one pipeline, two imports (nothing asserted on speed).


def test_bench_pep734_quick(tmp_path):
    from tpshare.bench import cli
    code = (f"import sys\nfrom tpshare.bench.cli import main\n"
            f"sys.exit(main(['pep734', '--quick', '--no-plots', '--out', "
            f"{str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tpshare.interpreters" in r.stdout
    import json
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        res = json.load(f)["experiments"]["pep734"]
    assert res["errors"] == {}
    assert res["results"]["tpshare"]["items_per_s"] > 0
    if sys.version_info >= (3, 13):
        assert res["results"]["cpython"]["items_per_s"] > 0
        assert res["ratio"] > 0 and "tpshare / CPython" in r.stdout
    else:
        assert "3.12 has no cross-interpreter queue" in r.stdout
    assert "pep734" in cli.list_text()
