"""The worker side of tpshare.Interpreter and tpshare.Pool: what runs
inside the interpreters they make.  Kept apart from the owner side
(tpshare._interpreters) so that what a worker imports to serve jobs is
small.  The C layer (src/interpreter.c) runs ``_worker_init(token)`` in a
new interpreter, then ``_worker_loop()`` on its own thread or
``_worker_serve_one()`` per submission (thread=False); a worker takes
jobs ``(job id, kind, target, token)`` from its work channel and sends
replies ``(job id, status, payload, worker id)`` to its owner's results
channel (see tpshare._interpreters for the protocol).
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

from ._tpshare import (
    _EXIT_INTERRUPT_MESSAGE,
    Channel,
    ChannelClosed,
    ChannelEmpty,
    attach,
    interpreter_id,
    share,
)

# Job kinds and reply statuses.  A kind with _FALLBACK set comes from the
# PEP 734 layer (tpshare.interpreters, InterpreterPoolExecutor): arguments
# that could not be shared were pickled (their positions are listed after
# the payload), and a result that cannot be shared is pickled back.
_EXEC, _CALL, _MAP = 0, 1, 2
_FALLBACK = 4
_OK, _RAISED, _UNSHAREABLE, _PICKLED, _BROKEN = 0, 1, 2, 3, 4

# Job id of a _BROKEN reply: the worker's initializer raised, the worker
# took no job and stopped.
_NO_JOB = 0

# True while a worker imports its owner's __main__ from its file: code at
# the top level of a script without an `if __name__ == "__main__":` guard
# runs then, and must not make interpreters (each would import the script
# again).  tpshare._interpreters reads it.
_importing_main = False

# Code the C layer runs in a new interpreter: once at start, then the
# worker loop (threaded) or one job per submission (thread=False).
_MODULE = "__import__('tpshare._worker', fromlist=['_'])"
_INIT = _MODULE + "._worker_init(%d)"
_LOOP = _MODULE + "._worker_loop()"
_SERVE_ONE = _MODULE + "._worker_serve_one()"

_worker: _Worker | None = None

# What a job carries: (job id, kind, target, token), target being source
# code or (module, qualified name); an initializer: (target, token,
# pickled); a reply: (job id, status, payload, worker id).
_Job = tuple[int, int, Any, "int | None"]
_Init = tuple[tuple[str, str], "int | None", bool]
_Reply = tuple[int, int, Any, int]


class _Worker:
    """The state of a worker interpreter: its channels and how to run a
    job.  One per worker, made by _worker_init()."""

    def __init__(self, work: Channel, results: Channel,
                 main_name: str | None, main_file: str | None,
                 init: _Init | None) -> None:
        self.work = work
        self.results = results
        self.main_name = main_name
        self.main_file = main_file
        self.init = init
        self.functions: dict[tuple[str, str], Any] = {}
        self.id = interpreter_id()

    def initialize(self) -> bool:
        """Run the pool's initializer, if any, before the first job.  False
        (after telling the owner, which breaks the pool) if it raised."""
        if self.init is None:
            return True
        target, token, pickled = self.init
        self.init = None
        try:
            func = self.function(*target)
            args = () if token is None else _take(token)
            if pickled:
                args = self.unpickled(args)
            func(*args)
        except BaseException as exc:
            self.send((_NO_JOB, _BROKEN, _describe(exc), self.id))
            return False
        return True

    def loop(self) -> None:
        """Run jobs until the work channel is closed and empty."""
        if not self.initialize():
            return
        work = self.work
        while True:
            try:
                msg = work.recv()
            except ChannelClosed:
                return
            except BaseException:
                # The exit interrupt (SystemExit) between two jobs.
                if work.closed:
                    return
                continue
            try:
                self.run(msg)
            except BaseException:
                if work.closed:
                    return
            msg = None

    def serve_one(self) -> None:
        """Run the next queued job, if any (thread=False)."""
        try:
            msg = self.work.recv(timeout=0)
        except (ChannelEmpty, ChannelClosed):
            return
        self.run(msg)

    def run(self, msg: _Job) -> None:
        job_id, kind, target, token = msg
        code = None
        result: Any
        fallback = kind & _FALLBACK
        kind &= ~_FALLBACK
        try:
            if kind == _EXEC:
                code = target
                self.exec(code, token)
                result = None
            else:
                func = self.function(*target)
                if kind == _CALL:
                    args, kwargs = self.arguments(token)
                    result = func(*args, **kwargs)
                else:
                    assert token is not None   # a chunk is never empty
                    chunk = _take(token)
                    result = tuple([func(*args) for args in chunk])
                    del chunk
        except BaseException as exc:
            reply = (job_id, _RAISED, _describe(exc, code), self.id)
        else:
            reply = self.reply(job_id, kind, target, result, fallback)
            del result
        self.send(reply)

    def arguments(self, token: int | None
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) of a call; pickled ones unpickled."""
        if token is None:
            return (), {}
        payload = _take(token)
        args, kwnames, kwvalues = payload[:3]
        if len(payload) > 3:
            values = self.unpickled(args + kwvalues, payload[3])
            args, kwvalues = values[:len(args)], values[len(args):]
        return args, dict(zip(kwnames, kwvalues))

    def unpickled(self, values: Any,
                  pickled: tuple[int, ...] | None = None) -> Any:
        """values (a tuple) with those at the positions `pickled` (all
        when None) unpickled.  A class of the owner's __main__ is found in
        its import here (see main_module)."""
        import io
        import pickle
        worker = self

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if module == "__main__":
                    return getattr(worker.main_module(), name)
                return super().find_class(module, name)

        def load(data: bytes) -> Any:
            return Unpickler(io.BytesIO(data)).load()

        if pickled is None:
            return load(values)
        values = list(values)
        for i in pickled:
            values[i] = load(values[i])
        return tuple(values)

    def exec(self, code: str, token: int | None) -> None:
        ns = sys.modules["__main__"].__dict__
        if token is not None:
            payload = _take(token)
            names, values = payload[:2]
            if len(payload) > 2:
                values = self.unpickled(values, payload[2])
            ns.update(zip(names, values))
            del values, payload
        if code.lstrip("\r\n")[:1] in (" ", "\t"):
            import textwrap
            code = textwrap.dedent(code)
        exec(compile(code, _EXEC_FILENAME, "exec"), ns)

    def function(self, modname: str, qualname: str) -> Any:
        key = (modname, qualname)
        func = self.functions.get(key)
        if func is None:
            if modname == "__main__":
                obj = self.main_module()
            else:
                __import__(modname)
                obj = sys.modules[modname]
            for part in qualname.split("."):
                obj = getattr(obj, part)
            func = self.functions[key] = obj
        return func

    def main_module(self) -> types.ModuleType:
        """The owner's __main__, imported here as multiprocessing's spawn
        does: by module name when it was run with -m, else from its file
        under the name __tpshare_main__ (so its `if __name__ ==
        '__main__':` block does not run)."""
        global _importing_main
        mod = sys.modules.get("__tpshare_main__")
        if mod is not None:
            return mod
        if self.main_name:
            __import__(self.main_name)
            mod = sys.modules[self.main_name]
        elif self.main_file:
            # The loader is chosen here, not by the file's suffix: a
            # script need not end in .py.
            import importlib.machinery
            import importlib.util
            loader = importlib.machinery.SourceFileLoader(
                "__tpshare_main__", self.main_file)
            spec = importlib.util.spec_from_loader(
                "__tpshare_main__", loader, origin=self.main_file)
            assert spec is not None   # a loader was given
            mod = importlib.util.module_from_spec(spec)
            sys.modules["__tpshare_main__"] = mod
            _importing_main = True
            try:
                loader.exec_module(mod)
            except BaseException:
                del sys.modules["__tpshare_main__"]
                raise
            finally:
                _importing_main = False
        else:
            raise ImportError("the owner's __main__ has no file to import "
                              "functions from")
        sys.modules["__tpshare_main__"] = mod
        return mod

    def reply(self, job_id: int, kind: int, target: Any, result: Any,
              fallback: int = 0) -> _Reply:
        if result is None:
            return (job_id, _OK, None, self.id)
        try:
            token = share(result).detach()
        except BaseException as exc:
            why = str(exc)
            if fallback:
                try:
                    import pickle
                    data = pickle.dumps(result)
                except BaseException as pexc:
                    why = f"{why}; and pickling it failed: {pexc}"
                else:
                    return (job_id, _PICKLED, share(data).detach(), self.id)
            what = "the code" if kind == _EXEC else f"{target[1]}()"
            return (job_id, _UNSHAREABLE,
                    f"the result of {what} is not shareable: {why}", self.id)
        return (job_id, _OK, token, self.id)

    def send(self, reply: _Reply) -> None:
        try:
            self.results.send(reply)
        except BaseException:
            if reply[1] in (_OK, _PICKLED) and reply[2] is not None:
                _release_token(reply[2])
            if not self.results.closed:
                raise
            # Closed at exit: nobody waits for the reply any more.


_EXEC_FILENAME = "<tpshare exec>"


def _describe(exc: BaseException, code: str | None = None
              ) -> tuple[str, str, str, tuple[str, str, str], str]:
    """(type name, message, traceback text, (type's __name__, __qualname__,
    __module__), the exception's last line as traceback prints it) of exc,
    all str."""
    tp = type(exc)
    mod = getattr(tp, "__module__", "builtins")
    if mod in ("builtins", "__main__"):
        name = tp.__qualname__
    else:
        name = f"{mod}.{tp.__qualname__}"
    try:
        message = str(exc)
    except BaseException:
        message = "<unprintable message>"
    info = (str(getattr(tp, "__name__", name)),
            str(getattr(tp, "__qualname__", name)), str(mod))
    try:
        import traceback
        only = "".join(traceback.format_exception_only(tp, exc)).rstrip()
    except BaseException:
        only = f"{name}: {message}" if message else name
    try:
        import linecache
        import traceback
        if code is not None:
            linecache.cache[_EXEC_FILENAME] = (
                len(code), None, code.splitlines(True), _EXEC_FILENAME)
        tb = exc.__traceback__
        # Drop the frames of this module: they are tpshare's, not the
        # user's.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(tp, exc, tb))
    except BaseException:
        text = ""
    return (name, message, text, info, only)


def _take(token: int) -> Any:
    """The value detached under token, rebuilt here; the record is
    released."""
    with attach(token) as s:
        return s.rebuild()


def _release_token(token: int) -> None:
    try:
        attach(token).release()
    except KeyError:
        pass


def _worker_init(token: int) -> None:
    """Run first in a new interpreter: set sys.path as the owner's and
    open the channels."""
    global _worker
    work_id, results_id, path, main_name, main_file, init = _take(token)
    sys.path[:] = path
    sys.unraisablehook = _UnraisableHook(sys.unraisablehook)
    _worker = _Worker(Channel.from_id(work_id), Channel.from_id(results_id),
                      main_name, main_file, init)


class _UnraisableHook:
    """A worker's sys.unraisablehook.  The interrupt at process exit is a
    SystemExit raised wherever the worker's code is at its next bytecode
    boundary: inside a weakref callback or a __del__ it cannot propagate
    and would be printed as "Exception ignored".  The owner sends it
    again until the worker stops, so it is not printed; everything else
    goes to the hook this one replaced."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        exc = unraisable.exc_value
        if (type(exc) is SystemExit
                and exc.args == (_EXIT_INTERRUPT_MESSAGE,)):
            return
        self.previous(unraisable)


def _worker_loop() -> None:
    assert _worker is not None
    try:
        _worker.loop()
    finally:
        _forget_dummy_thread()


def _forget_dummy_thread() -> None:
    """On 3.13 threading's main thread is the process's, so a worker's own
    thread is a threading._DummyThread in its interpreter once anything
    calls threading.current_thread() there.  The dummy is forgotten when
    the thread state is cleared, which Py_EndInterpreter does after
    tearing the threading module down ("Exception ignored in
    _DeleteDummyThreadOnDel.__del__").  Forget it now instead."""
    info = getattr(threading, "_thread_local_info", None)
    try:
        info.__dict__.pop("_track_dummy_thread_ref", None)
    except AttributeError:
        pass


def _worker_serve_one() -> None:
    assert _worker is not None
    _worker.serve_one()
