"""Interpreters that run in the background: the owner side.

``tpshare.Interpreter`` is an isolated interpreter with its own GIL, made
by ``src/interpreter.c`` and running on an OS thread of its own (or, with
``thread=False``, in the threads that submit work to it).
``tpshare.Pool`` is a set of them sharing one queue of work.  This module
holds the owner's side of the protocol between the creating interpreter
(the *owner*) and the interpreters it made (the *workers*); the workers'
side is tpshare._worker, small because every worker imports it:

- Work goes to a worker through a ``tpshare.Channel`` of its own (a
  pool's members share one).  A job is a neutral tuple ``(job id, kind,
  target, token)``: ``target`` is the source code, or the function's
  module and qualified name; ``token`` is a detached ``tpshare.Shared``
  holding the arguments.  Arguments are shared when the job is
  submitted, so an unshareable one raises ``NotShareableError`` before
  anything is queued; they are rebuilt in the worker after the
  function's module is imported there (it may register the types).
- Results come back through one results channel per owner, read by one
  thread of the owner (the *collector*) that completes the
  ``concurrent.futures.Future`` of each job.  A reply is ``(job id,
  status, payload, worker id)``; a value travels as a detached token, so
  a value the owner cannot rebuild fails its future instead of blocking
  the channel.
- The idle worker waits in ``Channel.recv()``, which also drains the
  releases other interpreters queue for it (an object is released in
  the interpreter that owns it).

Lifetimes.  An interpreter lives until ``close()`` (or the pool's
``shutdown()``), or until the owner exits: interpreters are not closed
when their Python object is collected, and ``list_interpreters()`` lists
them.  At exit (``threading``'s at-exit hook, which runs before
non-daemon threads are joined and before ``atexit``), queued work is
cancelled, running work is interrupted with ``SystemExit`` (tpshare waits
in it end with ``ChannelClosed``), and each interpreter is ended; one
whose memory is still viewed elsewhere is left to the runtime instead
(an interpreter is not ended while others view its memory: ending it
would wait for the views).  See docs/interpreters.md.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future
    from typing import Self

from . import _tpshare
from ._tpshare import (
    Channel,
    ChannelClosed,
    ChannelEmpty,
    Error,
    NotShareableError,
    interpreter_id,
    is_shareable,
    share,
    stats,
)
from . import _worker
from ._worker import (
    _BROKEN,
    _CALL,
    _EXEC,
    _FALLBACK,
    _INIT,
    _LOOP,
    _MAP,
    _OK,
    _PICKLED,
    _RAISED,
    _SERVE_ONE,
    _forget_dummy_thread,
    _release_token,
    _take,
)

__all__ = [
    "BrokenPool",
    "Interpreter",
    "InterpreterBusy",
    "InterpreterClosed",
    "Pool",
    "RemoteError",
    "list_interpreters",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
# (label, value) of the values a job carries, for NotShareableError.
_What = Sequence[tuple[str, Any]]

# States of an Interpreter or a Pool.
_OPEN, _CLOSING, _STOPPING, _CLOSED = range(4)

# Seconds between warnings while the exit hook waits for an interpreter.
_EXIT_WARN_EVERY = 10.0
# Seconds between interrupts while it waits: an interrupt that lands in
# a weakref callback or a __del__ is swallowed there, so it is sent again.
_EXIT_INTERRUPT_EVERY = 0.1


# ---------------------------------------------------------------------------
# Errors.


class RemoteError(Error):
    """An exception raised by code run in another interpreter.

    The exception itself cannot cross interpreters; this carries its
    type's name (``type_name``, e.g. ``'ValueError'`` or
    ``'mypkg.MyError'``), its message (``message``, ``str()`` of it) and
    the formatted remote traceback (``remote_traceback``, also added as a
    note so it prints with the local one), plus the ID of the interpreter
    that raised it (``interpreter_id``)."""

    type_name: str
    message: str
    remote_traceback: str
    interpreter_id: int | None
    type_info: tuple[str, str, str] | None
    formatted: str | None

    def __init__(self, type_name: str, message: str = "",
                 remote_traceback: str = "",
                 interpreter_id: int | None = None, *,
                 type_info: tuple[str, str, str] | None = None,
                 formatted: str | None = None) -> None:
        super().__init__(type_name, message, remote_traceback, interpreter_id)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.interpreter_id = interpreter_id
        # (__name__, __qualname__, __module__) of the remote type, and its
        # last traceback line ("ValueError: message"), for
        # tpshare.interpreters.ExecutionFailed.
        self.type_info = type_info
        self.formatted = formatted
        if remote_traceback and not getattr(self, "__notes__", None):
            self.add_note(f"Remote traceback (interpreter {interpreter_id}):"
                          f"\n{remote_traceback.rstrip()}")

    def __str__(self) -> str:
        if self.message:
            return f"{self.type_name}: {self.message}"
        return self.type_name


class InterpreterBusy(Error):
    """An interpreter cannot be closed: values it exported (views of its
    memory, ``Shared`` records) are still held by other interpreters, and
    ending it would pull the memory from under them (an interpreter is
    not ended while others hold its exports).  ``held`` maps
    each such interpreter's ID to the number of holders."""

    held: dict[int, int]

    def __init__(self, message: str,
                 held: dict[int, int] | None = None) -> None:
        super().__init__(message)
        self.held = dict(held or {})


class InterpreterClosed(Error, RuntimeError):
    """Work was submitted to an interpreter or pool that is closed or
    closing, or the process is exiting."""


class BrokenPool(InterpreterClosed):
    """The initializer of a pool raised in one of its interpreters: the
    pool takes no more work and the work queued in it fails with this
    error.  ``remote`` is the ``RemoteError`` describing what the
    initializer raised (also the ``__cause__``)."""

    remote: RemoteError | None

    def __init__(self, message: str,
                 remote: RemoteError | None = None) -> None:
        super().__init__(message)
        self.remote = remote


for _cls in (RemoteError, InterpreterBusy, InterpreterClosed, BrokenPool):
    _cls.__module__ = "tpshare"
del _cls



# ---------------------------------------------------------------------------
# The owner side.


def _new_future() -> Future[Any]:
    # Imported here: concurrent.futures costs ~20 ms to import, which
    # workers (and plain `import tpshare`) do not need.
    from concurrent.futures import Future
    return Future()


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """timeout as a float or None; TypeError naming the argument when it
    is not a number, ValueError when it is negative."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"{name} must be >= 0, not {timeout!r}")
    return float(timeout)


def _remote_error(payload: Any, worker_id: int) -> RemoteError:
    """The RemoteError of a _RAISED or _BROKEN reply's payload."""
    name, message, text, info, formatted = payload
    return RemoteError(name, message, text, worker_id, type_info=info,
                       formatted=formatted)


def _unpickle_result(data: bytes) -> Any:
    """A result pickled by a worker, unpickled here.  A class the worker
    found in its import of this interpreter's __main__ (named
    __tpshare_main__ there) is this __main__'s."""
    import io
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__tpshare_main__":
                module = "__main__"
            return super().find_class(module, name)

    return Unpickler(io.BytesIO(data)).load()


def _remote_holders(iid: int) -> int:
    return stats().get(iid, {}).get("remote", 0)


def _main_info() -> tuple[str | None, str | None]:
    """How a worker finds the owner's __main__: (module name, file)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name == "__main__":
        name = None
    file = getattr(main, "__file__", None)
    # A script read from standard input has "<stdin>" as its file.
    if isinstance(file, str) and os.path.isfile(file):
        file = os.path.abspath(file)
    else:
        file = None
    return name, file


def _target_of(func: object) -> tuple[str, str]:
    """(module, qualified name) under which func can be found in another
    interpreter.  NotShareableError when it cannot."""
    if not callable(func):
        raise TypeError(f"{func!r} is not callable")
    modname = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    found: Any = None
    if (isinstance(modname, str) and isinstance(qualname, str)
            and "<" not in qualname):
        found = sys.modules.get(modname)
        for part in qualname.split("."):
            found = getattr(found, part, None)
    if found is None or not (found is func or found == func):
        raise NotShareableError(
            f"{func!r} cannot be called in another interpreter: functions "
            "are sent by module and qualified name, so it must be "
            "importable (defined at the top level of a module, or a "
            "method of a class defined there)")
    if modname == "__main__" and _main_info() == (None, None):
        raise NotShareableError(
            f"{func!r} is defined in a __main__ that has no file (a script "
            "read from standard input, -c code or the interactive prompt), "
            "so other interpreters cannot import it; move it to a module, "
            "or run the script from a file")
    assert isinstance(modname, str) and isinstance(qualname, str)
    return (modname, qualname)


def _share_payload(payload: tuple[Any, ...] | None,
                   what: _What, kind: int | None = None) -> int | None:
    """A token for payload (a tuple of values), or None for no payload.
    `what` lists (label, value) for the values inside payload, so that
    NotShareableError names the one at fault.  With `kind` (_EXEC or
    _CALL: the PEP 734 layer), a value that cannot be shared is pickled
    instead, and the positions of the pickled ones are appended to the
    payload (tpshare._worker unpickles them)."""
    if payload is None:
        return None
    try:
        return share(payload).detach()
    except NotShareableError:
        if kind is not None:
            return share(_pickle_unshareable(payload, what, kind)).detach()
        # Find the culprit for a clear message (the error path only).
        for label, value in what:
            if not is_shareable(value):
                try:
                    share(value).release()
                except NotShareableError as exc:
                    raise NotShareableError(f"{label}: {exc}") from None
        raise


def _pickle_unshareable(payload: tuple[Any, ...], what: _What,
                        kind: int) -> tuple[Any, ...]:
    """payload with each value that cannot be shared pickled, and the
    positions of these appended.  NotShareableError naming the value
    when one can be neither shared nor pickled."""
    import pickle
    if kind == _EXEC:
        names, values = payload
    else:
        args, kwnames, kwvalues = payload
        values = args + kwvalues
    labels = [label for label, _ in what]
    values = list(values)
    pickled = []
    for i, value in enumerate(values):
        if is_shareable(value):
            continue
        try:
            values[i] = pickle.dumps(value)
        except Exception as exc:
            label = labels[i] if i < len(labels) else f"value {i}"
            raise NotShareableError(
                f"{label}: {type(value).__name__} objects cannot be shared, "
                f"and pickling it failed: {exc}") from None
        pickled.append(i)
    if kind == _EXEC:
        return (names, tuple(values), tuple(pickled))
    n = len(args)
    return (tuple(values[:n]), kwnames, tuple(values[n:]), tuple(pickled))


class _Hub:
    """The owner's side, one per interpreter that makes interpreters: the
    results channel, the collector thread that completes futures, the
    table of jobs and of live interpreters, and the exit hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # job id -> (Future, Interpreter or Pool)
        self.jobs: dict[int, tuple[Future[Any], _Submitter | None]] = {}
        # interpreter id -> Interpreter
        self.members: dict[int, Interpreter] = {}
        self.users = 0           # interpreters started or starting
        # while users > 0:
        self.results: Channel | None = None
        self.collector: threading.Thread | None = None
        self.ids = itertools.count(1)
        self.hooked = False
        self.exiting = False

    # Interpreters come and go.

    def enter(self) -> Channel:
        """Count one more interpreter; return the results channel."""
        if _worker._importing_main:
            raise RuntimeError(
                "an interpreter was about to be made while this worker "
                "interpreter imports the main script of its owner to find a "
                "function: the script makes interpreters at its top level, "
                "which runs again in every worker.  Guard that code with "
                "`if __name__ == \"__main__\":` (as multiprocessing "
                "requires), or move the function to a module")
        with self.lock:
            if self.exiting:
                raise InterpreterClosed(
                    "the process is exiting: no new interpreters")
            if not self.hooked:
                # threading's at-exit hooks run before non-daemon threads
                # are joined (the collector is one) and before atexit.
                register = getattr(threading, "_register_atexit", None)
                if register is None:
                    import atexit
                    atexit.register(self.at_exit)
                else:
                    register(self.at_exit)
                self.hooked = True
            results = self.results
            if results is None:
                results = Channel()
                collector = threading.Thread(
                    target=self.collect, args=(results,),
                    name="tpshare-results")
                collector.start()
                self.results, self.collector = results, collector
            self.users += 1
            return results

    def add_member(self, interp: Interpreter) -> None:
        with self.lock:
            self.members[interp.id] = interp

    def leave(self, interp: Interpreter | None = None) -> None:
        """Count one interpreter less (interp, when it was a member); the
        last one stops the collector."""
        with self.lock:
            if interp is not None:
                self.members.pop(interp.id, None)
            self.users -= 1
            if self.users > 0 or self.results is None:
                return
            results, collector = self.results, self.collector
            self.results = self.collector = None
        results.close()
        assert collector is not None   # set with results
        if collector.ident != threading.get_ident():
            collector.join()

    # Jobs.

    def add_job(self, fut: Future[Any], owner: _Submitter) -> int:
        with self.lock:
            job_id = next(self.ids)
            self.jobs[job_id] = (fut, owner)
        return job_id

    def pop_job(self, job_id: int
                ) -> tuple[Future[Any] | None, _Submitter | None]:
        with self.lock:
            return self.jobs.pop(job_id, (None, None))

    def in_collector(self) -> bool:
        collector = self.collector
        return (collector is not None
                and collector.ident == threading.get_ident())

    def collect(self, results: Channel) -> None:
        """The collector thread: complete the future of each reply."""
        # Its interpreter's other threads run and drain releases; waking
        # this one for them would only take CPU from them.
        _tpshare._parked_drains(False)
        while True:
            try:
                reply = results.recv()
            except ChannelClosed:
                return
            if self.exiting:
                if reply[1] in (_OK, _PICKLED) and reply[2] is not None:
                    _release_token(reply[2])
                return
            try:
                self.deliver(*reply)
            except BaseException:  # never lose the collector
                pass
            reply = None

    def deliver(self, job_id: int, status: int, payload: Any,
                worker_id: int) -> None:
        if status == _BROKEN:
            with self.lock:
                member = self.members.get(worker_id)
            if member is not None and member._pool is not None:
                member._pool._break(_remote_error(payload, worker_id))
            return
        fut, owner = self.pop_job(job_id)
        if fut is None or not fut.set_running_or_notify_cancel():
            # Cancelled (or discarded): drop the value where it is.
            if status in (_OK, _PICKLED) and payload is not None:
                _release_token(payload)
        elif status == _OK:
            try:
                fut.set_result(None if payload is None else _take(payload))
            except BaseException as exc:
                fut.set_exception(exc)
        elif status == _PICKLED:
            try:
                fut.set_result(_unpickle_result(_take(payload)))
            except BaseException as exc:
                fut.set_exception(exc)
        elif status == _RAISED:
            fut.set_exception(_remote_error(payload, worker_id))
        else:
            fut.set_exception(NotShareableError(payload))
        fut = None
        if owner is not None:
            # After the value left this frame (close() checks holders).
            owner._delivered(job_id)

    # Exit.

    def at_exit(self) -> None:
        """Stop every interpreter made here: cancel queued work, interrupt
        running work, end each interpreter (or leave it to the runtime
        when its memory is still viewed elsewhere), fail what was not
        delivered."""
        with self.lock:
            if self.exiting:
                return
            self.exiting = True
            members = sorted(self.members.values(), key=lambda i: i.id)
            results, collector = self.results, self.collector
        interrupted = members and _main_died_of_keyboard_interrupt()
        if results is not None:
            results.close()
            assert collector is not None   # set with results
            if collector.ident != threading.get_ident():
                collector.join()
        owners = []
        for m in members:
            owner = m._pool or m
            if owner not in owners:
                owners.append(owner)
        busy = [m.id for m in members if _remote_holders(m.id) > 0]
        if busy:
            _release_views_of(busy)
            busy = [i for i in busy if _remote_holders(i) > 0]
        for iid in busy:
            # Held by other interpreters (they may be ending too), or by
            # objects here that the sweep could not release.
            if _CAN_ABANDON:
                _quietly(_tpshare._interp_abandon, iid)
            else:
                # 3.12 cannot leave it to the runtime: end it without
                # waiting; the viewed memory stays allocated until the
                # process ends.
                _tpshare._process_exiting()
        for owner in owners:
            with owner._lock:
                owner._state = _STOPPING
            owner._work.close()
            owner._discard_queued()
        for m in members:
            _quietly(_tpshare._interp_interrupt, m.id)
        for m in members:
            waited, warn_at = 0.0, _EXIT_WARN_EVERY
            while not _quietly(_tpshare._interp_end, m.id,
                               _EXIT_INTERRUPT_EVERY):
                _quietly(_tpshare._interp_interrupt, m.id)
                waited += _EXIT_INTERRUPT_EVERY
                if waited < warn_at:
                    continue
                warn_at += _EXIT_WARN_EVERY
                sys.stderr.write(
                    f"tpshare: at exit, interpreter {m.id} has not stopped "
                    f"after {waited:.0f} s: it runs code that does not "
                    "return to the interpreter loop (a long C call, a "
                    "sleep, a wait outside tpshare); still waiting\n")
                sys.stderr.flush()
            m._state = _CLOSED
        for owner in owners:
            owner._state = _CLOSED
        with self.lock:
            jobs, self.jobs = self.jobs, {}
            self.members.clear()
            self.users = 0
            self.results = self.collector = None
        for fut, _ in jobs.values():
            if fut.set_running_or_notify_cancel():
                fut.set_exception(InterpreterClosed(
                    "the interpreter was shut down at process exit before "
                    "the work completed"))
        # Joining threads above made this thread a dummy again if it is
        # a worker's (this hook then runs as the worker ends).
        _forget_dummy_thread()
        if interrupted:
            _restore_keyboard_interrupt_status()


_hub = _Hub()


def _main_died_of_keyboard_interrupt() -> bool:
    """Whether this is the main interpreter of a script that is exiting
    because of an uncaught KeyboardInterrupt (printed, so sys.last_exc)."""
    return (interpreter_id() == 0 and not sys.flags.interactive
            and isinstance(getattr(sys, "last_exc", None),
                           KeyboardInterrupt))


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _restore_keyboard_interrupt_status() -> None:
    """A script that dies of KeyboardInterrupt exits by SIGINT.  CPython
    keeps that in one flag for the whole process and clears it whenever
    code is evaluated from a string in any interpreter (eval(), so any
    namedtuple made, by an import for instance): the interpreters stopped
    at exit may have done so while they unwound.  Evaluating code from a
    string that raises KeyboardInterrupt sets it again."""
    try:
        eval("_raise()", {"_raise": _raise_keyboard_interrupt})
    except KeyboardInterrupt:
        pass


def _after_fork_in_child() -> None:
    """os.fork()'s hook in the child: the interpreters made here before
    the fork, their threads and the results thread do not exist in the
    child (the C layer forgot them, and their channels are unusable
    there).  They become closed; submitting to them raises
    InterpreterClosed.  Futures still pending are never completed.  New
    interpreters work as usual."""
    hub = _hub
    hub.lock = threading.Lock()
    members, hub.members = list(hub.members.values()), {}
    hub.jobs = {}
    hub.users = 0
    hub.results = hub.collector = None
    done = set()
    for m in members:
        for obj in (m, m._pool):
            if obj is not None and id(obj) not in done:
                done.add(id(obj))
                obj._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _quietly(func: Callable[..., Any], iid: int, *args: Any) -> Any:
    """func(iid, *args), or True when the interpreter is already gone (a
    close() in another thread finished it)."""
    try:
        return func(iid, *args)
    except ValueError:
        return True


# Whether an interpreter can be left to the runtime at exit: CPython 3.12
# aborts ("remaining subinterpreters") if any is left; 3.13 finalizes
# them itself, after the exit hooks, without tpshare's wait for the
# interpreters that still view their memory.
_CAN_ABANDON = sys.version_info >= (3, 13)


def _release_views_of(ids: list[int]) -> None:
    """At exit: release the memoryviews (and Shared records) of this
    interpreter that view the memory of interpreters `ids`, so these can
    end without waiting for them.  A released memoryview raises
    ValueError when used; it never reads freed memory.  Views pinned by
    an export of their own (e.g. a NumPy array over them) stay."""
    import gc
    gc.collect()
    obj: Any = None
    exporter: Any = None
    View, Shared = _tpshare.View, _tpshare.Shared
    for obj in gc.get_objects():
        try:
            if type(obj) is memoryview:
                exporter = obj.obj
                if type(exporter) is View and exporter.owner in ids:
                    obj.release()
            elif type(obj) is Shared and obj.owner in ids:
                obj.release()
        except (ValueError, BufferError):
            pass   # already released, or pinned by an export
    obj = exporter = None


def list_interpreters() -> list[Interpreter]:
    """The interpreters made by tpshare in this interpreter that are not
    closed (pool members included), sorted by ID."""
    with _hub.lock:
        return sorted(_hub.members.values(), key=lambda i: i.id)


class _Submitter:
    """What an Interpreter and a Pool share: a work channel, the jobs not
    yet delivered, and closing."""

    _forked = False   # made before fork(), seen in the child
    # Whether arguments and results that cannot be shared are pickled
    # (the PEP 734 layer) or raise NotShareableError (tpshare's own).
    _fallback = False
    _broken: BrokenPool | None = None   # once the pool's initializer raised

    def _name(self) -> str:
        raise NotImplementedError

    def _members(self) -> list[Interpreter]:
        raise NotImplementedError

    def _setup(self, work: Channel) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._close_lock = threading.Lock()
        self._state = _OPEN
        self._pending: set[int] = set()   # ids of jobs not yet delivered

    # Submitting.

    def _submit(self, kind: int, target: Any,
                payload: tuple[Any, ...] | None, what: _What = (),
                fallback: bool | None = None) -> Future[Any]:
        if fallback is None:
            fallback = self._fallback
        fallback = fallback and kind != _MAP
        token = _share_payload(payload, what, kind if fallback else None)
        if fallback:
            kind |= _FALLBACK
        fut = _new_future()
        try:
            with self._lock:
                if self._broken is not None:
                    broken = self._broken
                    raise type(broken)(str(broken), broken.remote) \
                        from broken.remote
                if self._state != _OPEN:
                    raise InterpreterClosed(self._closed_message())
                job_id = _hub.add_job(fut, self)
                self._pending.add(job_id)
            try:
                self._work.send((job_id, kind, target, token))
            except ChannelClosed:
                _hub.pop_job(job_id)
                self._delivered(job_id)
                fut.cancel()
                raise InterpreterClosed(f"{self._name()} is closed") from None
        except BaseException:
            if token is not None:
                _release_token(token)
            raise
        self._after_submit(job_id)
        return fut

    def _after_submit(self, job_id: int) -> None:
        pass

    def _closed_message(self) -> str:
        if self._forked:
            return (f"{self._name()} was created before fork(): it does not "
                    "exist in this child process (interpreters and their "
                    "threads are not copied by fork); create interpreters "
                    "after the fork")
        return f"{self._name()} is closed"

    def _forget_after_fork(self) -> None:
        """In a child process: closed for good, with new locks (one held
        by a thread of the parent would stay held)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._close_lock = threading.Lock()
        self._pending = set()
        self._state = _CLOSED
        self._forked = True

    def _delivered(self, job_id: int) -> None:
        with self._lock:
            self._pending.discard(job_id)
            if not self._pending:
                self._idle.notify_all()

    def _discard_queued(self, error: BaseException | None = None) -> None:
        """Take back the jobs no worker took yet (the work channel is
        closed): their futures are cancelled, or fail with `error`."""
        while True:
            try:
                job_id, _, _, token = self._work.recv(timeout=0)
            except (ChannelEmpty, ChannelClosed):
                return
            if token is not None:
                _release_token(token)
            fut, _ = _hub.pop_job(job_id)
            if fut is not None:
                if error is None:
                    fut.cancel()
                elif fut.set_running_or_notify_cancel():
                    fut.set_exception(error)
            self._delivered(job_id)

    # Closing.

    def _close(self, timeout: object) -> None:
        timeout = _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._close_lock:
            with self._lock:
                if self._state == _CLOSED:
                    return
                if self._state == _OPEN:
                    self._state = _CLOSING
                stopping = self._state == _STOPPING
            if not stopping:
                try:
                    self._wait_idle(timeout, deadline)
                    self._check_not_busy()
                except BaseException:
                    with self._lock:
                        if self._state == _CLOSING:
                            self._state = _OPEN
                    raise
                with self._lock:
                    self._state = _STOPPING
                self._work.close()
                self._discard_queued()
            for m in self._members():
                if m._state == _CLOSED:
                    continue
                if not _tpshare._interp_end(m.id, _remaining(deadline)):
                    raise TimeoutError(
                        f"interpreter {m.id} did not end within {timeout} s "
                        "(its last job still runs); call close() again")
                m._state = _CLOSED
                _hub.leave(m)
            self._state = _CLOSED

    def _wait_idle(self, timeout: float | None,
                   deadline: float | None) -> None:
        with self._lock:
            if not self._pending:
                return
            if _hub.in_collector():
                raise RuntimeError(
                    f"cannot close {self._name()} from a done-callback "
                    "while it has work pending: the callback runs in the "
                    "thread that delivers the results")
            if not self._idle.wait_for(lambda: not self._pending,
                                       _remaining(deadline)):
                raise TimeoutError(
                    f"{self._name()}: {len(self._pending)} job(s) still "
                    f"pending after {timeout} s")

    def _check_not_busy(self) -> None:
        held = {}
        for m in self._members():
            n = _remote_holders(m.id)
            if n:
                held[m.id] = n
        if held:
            names = ", ".join(f"interpreter {i}: {n}" for i, n in held.items())
            raise InterpreterBusy(
                f"{self._name()} cannot be closed: values it exported are "
                f"still held by other interpreters ({names}), e.g. "
                "memoryviews of its memory returned as results; release "
                "them (and drop the futures holding them), then close "
                "again", held)


class Interpreter(_Submitter):
    """An isolated interpreter with its own GIL, made by tpshare.

    ``Interpreter()`` runs it on a new OS thread that waits for work;
    ``Interpreter(thread=False)`` runs submitted work in the submitting
    thread instead.  Work is source code (``exec``) or an importable
    function (``call``); values cross as tpshare shares them.  Close it
    with ``close()`` or a ``with`` block; see docs/interpreters.md."""

    id: int
    thread: bool

    def __init__(self, *, thread: bool = True,
                 _pool: Pool | None = None) -> None:
        self._pool = _pool
        self.thread = bool(thread) or _pool is not None
        self.id = None  # type: ignore[assignment]  # until started
        self._setup(_pool._work if _pool is not None else Channel())
        results = _hub.enter()
        init = None
        try:
            init = _pool._init_spec() if _pool is not None else None
            token = share((self._work.id, results.id,
                           tuple(p for p in sys.path if isinstance(p, str)),
                           *_main_info(), init)).detach()
            try:
                self.id = _tpshare._interp_start(
                    _INIT % token, _LOOP if self.thread else None)
            finally:
                _release_token(token)   # a KeyError if the worker took it
        except BaseException:
            if init is not None and init[1] is not None:
                _release_token(init[1])
            _hub.leave()
            raise
        _hub.add_member(self)

    def __repr__(self) -> str:
        if self._state == _OPEN:
            state = "open"
        elif self._state == _CLOSED:
            state = "closed"
        else:
            state = "closing"
        mode = " pool member" if self._pool is not None else (
            "" if self.thread else " thread=False")
        return f"<tpshare.Interpreter id={self.id}{mode} {state}>"

    def _name(self) -> str:
        return f"interpreter {self.id}"

    def _members(self) -> list[Interpreter]:
        return [self]

    def _check_own(self) -> None:
        if self._pool is not None:
            raise TypeError(f"interpreter {self.id} belongs to a Pool: "
                            "submit work through the pool")

    def _after_submit(self, job_id: int) -> None:
        if self.thread:
            return
        try:
            _tpshare._interp_run(self.id, _SERVE_ONE)
        except RuntimeError as exc:
            fut, _ = _hub.pop_job(job_id)
            if fut is not None and fut.set_running_or_notify_cancel():
                fut.set_exception(exc)
            self._delivered(job_id)

    @property
    def closed(self) -> bool:
        """True once close() started (no new work is accepted)."""
        return self._state != _OPEN

    def submit_exec(self, code: str, /, **shared: Any) -> Future[None]:
        """Run source code in the interpreter's ``__main__``, with each
        keyword argument bound there to the value shared; return a
        ``concurrent.futures.Future`` whose result is None, or whose
        exception is a ``RemoteError``.  Code indented as a whole is
        dedented.  NotShareableError (before anything runs) when a value
        cannot be shared."""
        self._check_own()
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        payload = None
        if shared:
            payload = (tuple(shared), tuple(shared.values()))
        what = [(f"shared value {k!r}", v) for k, v in shared.items()]
        return self._submit(_EXEC, code, payload, what)

    def exec(self, code: str, /, **shared: Any) -> None:
        """Like submit_exec(), but wait: return None, or raise the
        RemoteError.  The names stay bound in ``__main__`` afterwards."""
        self.submit_exec(code, **shared).result()

    def call(self, func: Callable[_P, _T], /, *args: _P.args,
             **kwargs: _P.kwargs) -> Future[_T]:
        """Call ``func(*args, **kwargs)`` in the interpreter and return a
        ``concurrent.futures.Future`` of its result.  ``func`` is found
        there by module and qualified name, so it must be importable;
        arguments and result cross as tpshare shares them.  An exception
        comes back as ``RemoteError``; an unshareable result as
        ``NotShareableError``; an unshareable argument raises
        ``NotShareableError`` here, before anything runs."""
        self._check_own()
        target = _target_of(func)
        fut: Future[_T] = self._submit(_CALL, target,
                                       *_call_payload(target, args, kwargs))
        return fut

    submit = call

    def close(self, timeout: float | None = None) -> None:
        """Wait for the work submitted so far, then end the interpreter.

        Raises ``InterpreterBusy`` (the interpreter stays usable) while
        values it exported are held by other interpreters, and
        ``TimeoutError`` if ``timeout`` seconds pass first (call again).
        Idempotent."""
        if self._pool is not None:
            raise TypeError(f"interpreter {self.id} belongs to a Pool: "
                            "shut the pool down")
        self._close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _call_payload(target: tuple[str, str], args: tuple[Any, ...],
                  kwargs: dict[str, Any]
                  ) -> tuple[tuple[Any, ...] | None, _What]:
    payload = None
    if args or kwargs:
        payload = (args, tuple(kwargs), tuple(kwargs.values()))
    what = [(f"argument {i} of {target[1]}()", a) for i, a in enumerate(args)]
    what += [(f"argument {k!r} of {target[1]}()", v)
             for k, v in kwargs.items()]
    return payload, what


def _chunks(items: Iterable[Any], size: int
            ) -> Iterator[tuple[Any, ...]]:
    it = iter(items)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


class Pool(_Submitter):
    """``workers`` interpreters (default: os.cpu_count()), each on its
    own thread, taking jobs from one shared queue: an executor in the
    manner of ``concurrent.futures`` (``submit``, ``map``, ``shutdown``,
    a context manager) whose work runs in parallel on separate GILs."""

    _broken_class = BrokenPool

    def __init__(self, workers: int | None = None, *,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self._init_args(workers, "workers", initializer, initargs)
        self._start(self._nworkers)

    def _init_args(self, workers: object, name: str,
                   initializer: Callable[..., object] | None,
                   initargs: object) -> None:
        """Check the arguments (TypeError and ValueError naming the one at
        fault) and keep them."""
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"{name} must be an int or None, not "
                            f"{type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"{name} must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be callable or None")
        if not isinstance(initargs, tuple):
            raise TypeError(f"initargs must be a tuple, not "
                            f"{type(initargs).__name__}")
        self._nworkers = workers
        self._initializer = None
        if initializer is not None:
            self._initializer = _target_of(initializer)
            self._initargs = initargs
            # Fail here, not in each worker, when they cannot travel.
            self._init_spec(check=True)

    def _init_spec(self, check: bool = False
                   ) -> tuple[tuple[str, str], int | None, bool] | None:
        """What a new member takes to run the initializer: (target, token
        of initargs, whether they were pickled), or None.  One token per
        member (each takes its own)."""
        if self._initializer is None:
            return None
        args = self._initargs
        if not args:
            return (self._initializer, None, False)
        pickled = False
        try:
            shared = share(args)
        except NotShareableError:
            if not self._fallback:
                raise
            import pickle
            try:
                shared = share(pickle.dumps(args))
            except Exception as exc:
                raise NotShareableError(
                    f"initargs cannot be shared, and pickling them failed: "
                    f"{exc}") from None
            pickled = True
        if check:
            shared.release()
            return None
        return (self._initializer, shared.detach(), pickled)

    def _start(self, workers: int) -> None:
        self._setup(Channel())
        self._interps = []
        try:
            for _ in range(workers):
                self._interps.append(Interpreter(_pool=self))
        except BaseException:
            self._state = _STOPPING
            self._work.close()
            for m in self._interps:
                _tpshare._interp_end(m.id)
                m._state = _CLOSED
                _hub.leave(m)
            self._state = _CLOSED
            raise

    def __repr__(self) -> str:
        state = {_OPEN: "open", _CLOSED: "closed"}.get(self._state,
                                                       "closing")
        return f"<tpshare.Pool ids={self.ids} {state}>"

    def _name(self) -> str:
        return f"the pool of interpreters {list(self.ids)}"

    def _members(self) -> list[Interpreter]:
        return list(self._interps)

    @property
    def ids(self) -> tuple[int, ...]:
        """The IDs of the pool's interpreters."""
        return tuple(m.id for m in self._interps)

    @property
    def closed(self) -> bool:
        """True once close() or shutdown() started."""
        return self._state != _OPEN

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args,
               **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the first free interpreter;
        return a ``concurrent.futures.Future``.  Same rules as
        ``Interpreter.call()``."""
        target = _target_of(fn)
        fut: Future[_T] = self._submit(_CALL, target,
                                       *_call_payload(target, args, kwargs))
        return fut

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: float | None = None,
            chunksize: int = 1) -> Iterator[_T]:
        """Like ``concurrent.futures.Executor.map``: an iterator of
        ``fn(*args)`` for the items of ``iterables`` taken together, in
        order.  Everything is submitted at once; ``chunksize`` items
        travel per job (results then cross as one tuple per chunk)."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, not "
                            f"{type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        timeout = _check_timeout(timeout)
        target = _target_of(fn)
        end = None if timeout is None else time.monotonic() + timeout
        items = zip(*iterables)
        if chunksize == 1:
            fs = [self._submit(_CALL, target,
                               *_call_payload(target, args, {}))
                  for args in items]
        else:
            fs = [self._submit(_MAP, target, chunk,
                               [(f"a chunk of arguments of {target[1]}()",
                                 chunk)])
                  for chunk in _chunks(items, chunksize)]

        def results() -> Iterator[_T]:
            f: Future[Any] | None
            try:
                fs.reverse()
                while fs:
                    f = fs.pop()
                    value = f.result(_remaining(end))
                    f = None
                    if chunksize == 1:
                        yield value
                    else:
                        yield from value
            finally:
                for f in fs:
                    f.cancel()
        return results()

    def _break(self, remote: RemoteError) -> None:
        """A member's initializer raised (in the results thread): the pool
        takes no more work, and the queued work fails."""
        error = self._broken_class(
            f"{self._name()} is broken: its initializer raised in "
            f"interpreter {remote.interpreter_id}: {remote}", remote)
        error.__cause__ = remote
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
        self._discard_queued(error)

    def close(self, timeout: float | None = None) -> None:
        """Wait for the submitted work, then end every interpreter of the
        pool.  ``InterpreterBusy`` (the pool stays usable) while values
        they exported are held elsewhere; ``TimeoutError`` after
        ``timeout`` seconds."""
        self._close(timeout)

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        """``Executor.shutdown``: stop accepting work; with
        ``cancel_futures``, cancel the jobs no interpreter took yet; with
        ``wait``, close() now, else close in a background thread (if the
        pool is then busy, its interpreters stay open until exit)."""
        with self._lock:
            if self._state == _OPEN:
                self._state = _CLOSING
        if cancel_futures:
            self._discard_queued()
        if wait:
            self._close(None)
        else:
            threading.Thread(target=self._close_quietly,
                             name="tpshare-pool-shutdown").start()

    def _close_quietly(self) -> None:
        try:
            self._close(None)
        except Error:
            pass   # busy: its interpreters stay open until exit

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)
