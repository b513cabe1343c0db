"""A small program against tpshare's public API that `mypy --strict`
checks (tests/test_pep734.py::test_mypy_strict_accepts_the_public_api):
the types it relies on are tpshare's annotations, not Any."""

from concurrent.futures import Future

import tpshare
from tpshare import interpreters


def square(x: int) -> int:
    return x * x


def main() -> None:
    interp: interpreters.Interpreter = interpreters.create()
    interp.prepare_main({"a": 1}, b=2.5)
    interp.exec("c = a + b")
    n: int = interp.call(square, 3)
    t = interp.call_in_thread(square, 4)
    t.join()
    try:
        interp.call(square, 5)
    except interpreters.ExecutionFailed as exc:
        name: str = exc.excinfo.type.__name__
        text: str = exc.excinfo.errdisplay + exc.excinfo.formatted
        print(name, text)
    ids: list[int] = [i.id for i in interpreters.list_all()]
    whence: str = interpreters.get_main().whence
    running: bool = interpreters.get_current().is_running()
    interp.close()

    q: interpreters.Queue = interpreters.create_queue(
        10, unbounditems=interpreters.UNBOUND_REMOVE)
    q.put(n, timeout=1.5)
    q.put_nowait("x", unbounditems=interpreters.UNBOUND)
    size: int = q.qsize() + q.maxsize + q.id
    item = q.get(timeout=0.5)
    try:
        q.get_nowait()
    except interpreters.QueueEmpty:
        pass
    same: interpreters.Queue = interpreters.Queue(q.id)

    with tpshare.InterpreterPoolExecutor(max_workers=2) as ex:
        fut: Future[int] = ex.submit(square, 6)
        total: int = fut.result() + sum(ex.map(square, range(3), timeout=5.0))
    ex.shutdown(wait=True, cancel_futures=False)

    with tpshare.Pool(2) as pool:
        pf: Future[int] = pool.submit(square, 2)
        print(pf.result())
    with tpshare.Interpreter() as ti:
        tf: Future[int] = ti.call(square, 7)
        print(tf.result())

    err = tpshare.RemoteError("ValueError", "m")
    print(err.type_name, err.remote_traceback, err.interpreter_id)
    print(ids, whence, running, size, item, same, total,
          interpreters.is_shareable(3))


if __name__ == "__main__":
    main()
