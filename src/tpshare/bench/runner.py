"""Where the far side of an experiment runs: isolated interpreters with
their own GIL, each on a thread of its own.

This is the one place that chooses how interpreters are made.  With
``tpshare.Interpreter`` available it is used; otherwise, or with
``--runner stdlib``, the standard library's low-level module is used
(through ``tpshare._stdinterp``: 3.13's ``_interpreters``, 3.12's
``_xxsubinterpreters``), driven from a dedicated thread that creates,
runs and destroys the interpreter: on 3.12, destroying from another
thread an interpreter in which ``threading`` was imported hangs in
``threading._shutdown``.

Either way a worker runs one call at a time of a function of
``tpshare.bench._remote`` with literal arguments (ints, strs, tuples),
and the call's outcome is collected with ``Job.result()``.
"""

import os
import queue
import sys
import textwrap
import threading

import tpshare
from tpshare import _stdinterp

RUNNERS = ("auto", "stdlib", "tpshare")


class RemoteFailure(RuntimeError):
    """Code run in a worker interpreter raised."""


def choose(name="auto"):
    """The runner to use: "tpshare" when asked for or when
    tpshare.Interpreter exists (auto), else "stdlib"."""
    if name == "auto":
        name = os.environ.get("TPSHARE_BENCH_RUNNER", "auto")
    if name == "auto":
        return "tpshare" if hasattr(tpshare, "Interpreter") else "stdlib"
    if name == "tpshare" and not hasattr(tpshare, "Interpreter"):
        raise RuntimeError("tpshare.Interpreter is not available in this "
                           "build of tpshare")
    return name


def describe(name):
    """Human-readable description of a runner, for the report."""
    if name == "tpshare":
        return "tpshare.Interpreter (own GIL, own thread)"
    return (f"stdlib {_stdinterp.MODULE.__name__}, isolated config (own "
            "GIL), one thread each")


def new_worker(name):
    """A worker of the chosen runner (see choose())."""
    if name == "tpshare":
        return _TpshareWorker()
    return _StdlibWorker()


class Job:
    """One call running in a worker."""

    def __init__(self):
        self._done = threading.Event()
        self._error = None

    def _finish(self, error=None):
        self._error = error
        self._done.set()

    def done(self):
        return self._done.is_set()

    def result(self, timeout=None):
        """Wait for the call; raise RemoteFailure if it raised,
        TimeoutError if it is still running after timeout seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError("the remote call is still running")
        if self._error is not None:
            raise RemoteFailure(self._error)


# ---------------------------------------------------------------------------
# The standard library's interpreters.

def _std_exec(iid, code):
    """Run code in stdlib interpreter iid; None, or the error's text."""
    try:
        _stdinterp.run(iid, code)
    except _stdinterp.RunFailedError as exc:
        return str(exc)
    return None


def _call_code(func, args):
    return textwrap.dedent(f"""\
        import sys
        sys.path[:] = {[p for p in sys.path if isinstance(p, str)]!r}
        import tpshare.bench._remote as _remote
        _remote.{func}(*{tuple(args)!r})
        """)


class _StdlibWorker:
    """A stdlib isolated interpreter owned by one thread."""

    kind = "stdlib"

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self._ready = threading.Event()
        self._start_error = None
        self.id = None
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name="tpshare.bench worker")
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise RuntimeError(f"cannot create an interpreter: "
                               f"{self._start_error}")

    def _main(self):
        try:
            self.id = _stdinterp.create()
        except BaseException as exc:  # noqa: BLE001 - reported to creator
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    break
                job, code = item
                try:
                    err = _std_exec(self.id, code)
                except BaseException as exc:  # noqa: BLE001
                    err = f"{type(exc).__name__}: {exc}"
                job._finish(err)
        finally:
            _stdinterp.destroy(self.id)

    def call(self, func, *args):
        """Start _remote.func(*args) in the interpreter; a Job."""
        job = Job()
        self._jobs.put((job, _call_code(func, args)))
        return job

    def alive(self):
        return self._thread.is_alive()

    def close(self, timeout=60):
        self._jobs.put(None)
        self._thread.join(timeout)


# ---------------------------------------------------------------------------
# tpshare's own interpreters.


class _TpshareWorker:
    """A tpshare.Interpreter."""

    kind = "tpshare"

    def __init__(self):
        self._interp = tpshare.Interpreter()
        self.id = self._interp.id

    def call(self, func, *args):
        from . import _remote

        job = Job()
        fut = self._interp.call(getattr(_remote, func), *args)

        def finished(f):
            exc = f.exception()
            job._finish(None if exc is None
                        else f"{type(exc).__name__}: {exc}")

        fut.add_done_callback(finished)
        return job

    def alive(self):
        return not self._interp.closed

    def close(self, timeout=60):
        self._interp.close(timeout)
