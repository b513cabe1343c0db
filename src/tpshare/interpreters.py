"""PEP 734's interpreters API (CPython 3.14's ``concurrent.interpreters``)
on tpshare's machinery, for CPython 3.12 and 3.13.

``from tpshare import interpreters`` is meant as a drop-in replacement for
``from concurrent import interpreters``: the same names, signatures and
semantics, with tpshare underneath.  An interpreter made by ``create()``
is a ``tpshare.Interpreter`` (isolated, its own GIL) that runs work in
the thread that submits it, as CPython's does; values cross as tpshare
shares them (the type registry, zero-copy buffers), and what cannot be
shared is pickled, as in 3.14.  A queue is a ``tpshare.Queue`` (channel
core, real blocking, float timeouts).  docs/pep734.md lists what is the
same, what is better and what differs.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import _interpreters as _impl
from . import _stdinterp, _tpshare
from ._worker import _CALL, _EXEC
from ._tpshare import (
    UNBOUND,
    UNBOUND_ERROR,
    UNBOUND_REMOVE,
    Error,
    ItemInterpreterDestroyed,
    NotShareableError,
    QueueEmpty,
    QueueFull,
    interpreter_id,
)
from ._tpshare import Queue as _Handle
from ._tpshare import is_shareable as _is_shareable

__all__ = [
    "ExecutionFailed",
    "Interpreter",
    "InterpreterError",
    "InterpreterNotFoundError",
    "ItemInterpreterDestroyed",
    "NotShareableError",
    "Queue",
    "QueueEmpty",
    "QueueError",
    "QueueFull",
    "QueueNotFoundError",
    "UNBOUND",
    "UNBOUND_ERROR",
    "UNBOUND_REMOVE",
    "create",
    "create_queue",
    "get_current",
    "get_main",
    "is_shareable",
    "list_all",
]

if TYPE_CHECKING:
    from ._tpshare import UnboundItem
else:
    UnboundItem = type(UNBOUND)

_T = TypeVar("_T")


# ---------------------------------------------------------------------------
# Errors.  Where the running CPython has an error of the same name in its
# own interpreters module (3.13's _interpreters), tpshare's derives from
# it too, so `except` clauses written for CPython's module catch it.


def _cpython_error(name: str) -> type[Exception]:
    error = getattr(_stdinterp.MODULE, name, None)
    if isinstance(error, type) and issubclass(error, Exception):
        return error
    return Exception


if TYPE_CHECKING:
    _InterpreterErrorBase = Exception
    _NotFoundBase = Exception
else:
    _InterpreterErrorBase = _cpython_error("InterpreterError")
    _NotFoundBase = _cpython_error("InterpreterNotFoundError")


class InterpreterError(Error, _InterpreterErrorBase):
    """An interpreter operation failed."""


class InterpreterNotFoundError(InterpreterError, _NotFoundBase):
    """No interpreter with that ID exists (any more)."""


class QueueError(Error, RuntimeError):
    """A queue operation failed."""


class QueueNotFoundError(QueueError):
    """No queue with that ID exists (any more)."""


class ExceptionInfo:
    """What is known of an exception raised in another interpreter (the
    exception itself cannot cross): ``type`` (with ``__name__``,
    ``__qualname__`` and ``__module__``), ``msg`` (its ``str()``),
    ``formatted`` (its last traceback line, ``"ValueError: msg"``) and
    ``errdisplay`` (the whole traceback as it would print)."""

    type: types.SimpleNamespace
    msg: str
    formatted: str
    errdisplay: str

    def __init__(self, type_name: str, qualname: str, module: str, msg: str,
                 formatted: str, errdisplay: str) -> None:
        self.type = types.SimpleNamespace(
            __name__=type_name, __qualname__=qualname, __module__=module)
        self.msg = msg
        self.formatted = formatted
        self.errdisplay = errdisplay

    def __repr__(self) -> str:
        return (f"ExceptionInfo(type={self.type.__qualname__!r}, "
                f"msg={self.msg!r})")

    @classmethod
    def _from_remote(cls, remote: _impl.RemoteError) -> ExceptionInfo:
        info = remote.type_info
        if info is None:
            name = remote.type_name.rpartition(".")[2]
            info = (name, name, "builtins")
        formatted = remote.formatted or str(remote)
        return cls(info[0], info[1], info[2], remote.message, formatted,
                   remote.remote_traceback or formatted)


class ExecutionFailed(InterpreterError):
    """Code run by ``Interpreter.exec()`` or ``call()`` raised; ``excinfo``
    (an ``ExceptionInfo``) describes the exception."""

    excinfo: ExceptionInfo

    def __init__(self, excinfo: ExceptionInfo) -> None:
        super().__init__(excinfo.formatted or excinfo.type.__name__)
        self.excinfo = excinfo

    def __str__(self) -> str:
        base = super().__str__()
        display = self.excinfo.errdisplay.rstrip()
        if not display or display == base:
            return base
        return f"{base}\n\nUncaught in the interpreter:\n\n{display}"


for _cls in (InterpreterError, InterpreterNotFoundError, QueueError,
             QueueNotFoundError, ExecutionFailed):
    _cls.__module__ = __name__
del _cls


def is_shareable(obj: object, /) -> bool:
    """True if obj can cross interpreters without pickling (checked
    deeply: a tuple holding a list is not)."""
    return _is_shareable(obj)


# ---------------------------------------------------------------------------
# Interpreters.

# What Interpreter.whence says, for each of CPython's WHENCE_* codes
# (3.13; 3.12 has none) and for the interpreters tpshare made here.
_WHENCE_NAMES = {
    "WHENCE_UNKNOWN": "unknown",
    "WHENCE_RUNTIME": "runtime init",
    "WHENCE_LEGACY_CAPI": "legacy C-API",
    "WHENCE_CAPI": "C-API",
    "WHENCE_XI": "cross-interpreter C-API",
    "WHENCE_STDLIB": "_interpreters module",
}
_WHENCE_TPSHARE = "tpshare"


def _whence_of(iid: int) -> str:
    if (_impl._hub.members.get(iid) is not None
            or iid in _tpshare._interp_list()):
        return _WHENCE_TPSHARE
    if iid == 0:
        return "runtime init"
    whence = getattr(_stdinterp.MODULE, "whence", None)
    if whence is None:
        return "unknown"
    try:
        code = whence(iid)
    except Exception:
        return "unknown"
    for name, text in _WHENCE_NAMES.items():
        if getattr(_stdinterp.MODULE, name, None) == code:
            return text
    return "unknown"


def _all_ids() -> list[int]:
    """The IDs of every interpreter of the process, in CPython's order."""
    found: list[Any]
    try:
        found = _stdinterp.MODULE.list_all(require_ready=True)
    except TypeError:   # 3.12
        found = _stdinterp.MODULE.list_all()
    # 3.13 lists (id, whence), 3.12 InterpreterID objects.
    return [int(item[0] if isinstance(item, tuple) else item)
            for item in found]


_known: weakref.WeakValueDictionary[int, Interpreter] = (
    weakref.WeakValueDictionary())


def _check_id(id: object, what: str = "id") -> int:
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"{what} must be an int, not {type(id).__name__}")
    return int(id)


class _ById:
    """What an object named by a process-wide ID is, as in CPython's
    module: one object per ID in each interpreter, shown, compared,
    hashed and pickled by that ID."""

    _id: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id})"

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ById) or not (
                isinstance(other, type(self)) or isinstance(self, type(other))):
            return NotImplemented
        return self._id == other._id

    def __reduce__(self) -> tuple[type[_ById], tuple[int]]:
        return (type(self), (self._id,))

    @property
    def id(self) -> int:
        """The process-wide ID."""
        return self._id


class Interpreter(_ById):
    """One interpreter of the process, by ID: ``Interpreter(id)`` is the
    same object for the same ID while it lives.  Those made by
    ``create()`` (or by ``tpshare.Interpreter`` in this interpreter) run
    code; others (the main interpreter, or one made by CPython's
    modules) are only described."""

    _id: int
    _whence: str

    def __new__(cls, id: int, /) -> Interpreter:
        id = _check_id(id)
        self = _known.get(id)
        if self is not None:
            return self
        if id != interpreter_id() and id not in _all_ids():
            raise InterpreterNotFoundError(f"interpreter {id} not found")
        return cls._wrap(id)

    @classmethod
    def _wrap(cls, id: int) -> Interpreter:
        self = _known.get(id)
        if self is None:
            self = super().__new__(cls)
            self._id = id
            self._whence = _whence_of(id)
            _known[id] = self
        return self

    @property
    def whence(self) -> str:
        """Where the interpreter was made: ``'tpshare'`` for those tpshare
        made, ``'runtime init'`` for the main one, else what CPython says
        (3.13) or ``'unknown'`` (3.12)."""
        return self._whence

    def _backend(self, action: str) -> _impl.Interpreter:
        """The tpshare.Interpreter this one is, open; InterpreterError
        when it is not one, InterpreterNotFoundError once closed."""
        backend = _impl._hub.members.get(self._id)
        if backend is None:
            if self._whence == _WHENCE_TPSHARE:
                raise InterpreterNotFoundError(
                    f"interpreter {self._id} was closed")
            raise InterpreterError(
                f"cannot {action} interpreter {self._id}: it was not made by "
                "tpshare in this interpreter (its whence is "
                f"{self._whence!r})")
        if backend._pool is not None:
            raise InterpreterError(
                f"cannot {action} interpreter {self._id}: it belongs to a "
                "pool; submit work through the pool")
        if backend.closed:
            raise InterpreterNotFoundError(
                f"interpreter {self._id} was closed")
        return backend

    def is_running(self) -> bool:
        """Whether the interpreter runs code now (for those tpshare made:
        whether work submitted to it is not finished)."""
        if self._id == interpreter_id():
            return True
        backend = _impl._hub.members.get(self._id)
        if backend is not None:
            with backend._lock:
                return bool(backend._pending)
        if self._whence == _WHENCE_TPSHARE:
            raise InterpreterNotFoundError(f"interpreter {self._id} was "
                                           "closed")
        try:
            return bool(_stdinterp.MODULE.is_running(self._id))
        except Exception as exc:
            raise InterpreterNotFoundError(
                f"interpreter {self._id} not found") from exc

    def close(self) -> None:
        """End the interpreter.  InterpreterError for the current one, the
        main one, one tpshare did not make here, or one that is running;
        InterpreterNotFoundError if it is closed already."""
        if self._id == interpreter_id():
            raise InterpreterError("cannot close the current interpreter")
        backend = self._backend("close")
        if self.is_running():
            raise InterpreterError(f"interpreter {self._id} is running")
        try:
            backend.close()
        except _impl.InterpreterBusy as exc:
            raise InterpreterError(str(exc)) from exc

    def prepare_main(self, ns: Mapping[str, object] | None = None, /,
                     **kwargs: object) -> None:
        """Bind the given names in the interpreter's ``__main__`` to the
        values, shared (or pickled when they cannot be shared)."""
        names = dict(ns, **kwargs) if ns is not None else kwargs
        backend = self._backend("prepare")
        if not names:
            return
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"names must be str, not "
                                f"{type(name).__name__}")
        what = [(f"value {k!r}", v) for k, v in names.items()]
        _wait(backend._submit(_EXEC, "",
                              (tuple(names), tuple(names.values())), what,
                              fallback=True))

    def exec(self, code: str, /) -> None:
        """Run source code in the interpreter's ``__main__``, in this
        thread; ExecutionFailed if it raises."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        backend = self._backend("run code in")
        _wait(backend._submit(_EXEC, code, None, (), fallback=True))

    def call(self, callable: Callable[..., _T], /, *args: Any,
             **kwargs: Any) -> _T:
        """Call ``callable(*args, **kwargs)`` in the interpreter, in this
        thread, and return its result.  The callable is found there by
        module and qualified name; arguments and result are shared, or
        pickled when they cannot be.  ExecutionFailed if it raises."""
        backend = self._backend("call in")
        target = _impl._target_of(callable)
        payload, what = _impl._call_payload(target, args, kwargs)
        result: _T = _wait(backend._submit(_CALL, target, payload,
                                           what, fallback=True))
        return result

    def call_in_thread(self, callable: Callable[..., object], /,
                       *args: Any, **kwargs: Any) -> threading.Thread:
        """Start a thread that calls ``callable(*args, **kwargs)`` in the
        interpreter; return the thread.  Its result is discarded; an
        exception goes to threading.excepthook."""
        self._backend("call in")
        t = threading.Thread(target=self.call, args=(callable, *args),
                             kwargs=kwargs)
        t.start()
        return t


def _wait(fut: Any) -> Any:
    """The result of a job's future; its RemoteError as ExecutionFailed."""
    try:
        return fut.result()
    except _impl.RemoteError as exc:
        raise ExecutionFailed(ExceptionInfo._from_remote(exc)) from None
    finally:
        fut = None


def create() -> Interpreter:
    """A new isolated interpreter (its own GIL), idle until used."""
    backend = _impl.Interpreter(thread=False)
    return Interpreter._wrap(backend.id)


def list_all() -> list[Interpreter]:
    """Every interpreter of the process."""
    return [Interpreter._wrap(i) for i in _all_ids()]


def get_current() -> Interpreter:
    """The interpreter running this code."""
    return Interpreter._wrap(interpreter_id())


def get_main() -> Interpreter:
    """The main interpreter."""
    return Interpreter._wrap(0)


# ---------------------------------------------------------------------------
# Queues.

_known_queues: weakref.WeakValueDictionary[int, Queue] = (
    weakref.WeakValueDictionary())


class Queue(_ById):
    """A queue between interpreters: ``Queue(id)`` is the live queue with
    that ID (QueueNotFoundError otherwise), the same object for the same
    ID while it lives here; ``create_queue()`` makes one.  Items cross as
    tpshare shares them, or pickled when they cannot be shared."""

    _id: int
    _maxsize: int
    _handle: _Handle
    _put: Callable[..., None]

    def __new__(cls, id: int, /) -> Queue:
        id = _check_id(id)
        self = _known_queues.get(id)
        if self is not None:
            return self
        try:
            handle = _Handle.from_id(id)
        except KeyError:
            raise QueueNotFoundError(f"queue {id} not found") from None
        return cls._wrap(handle, None)

    @classmethod
    def _wrap(cls, handle: _Handle, maxsize: int | None) -> Queue:
        self = super().__new__(cls)
        self._id = handle.id
        self._handle = handle
        if maxsize is None:
            maxsize = handle.maxsize if handle.maxsize > 0 else -1
        self._maxsize = maxsize
        # The handle's getters, bound here: get() is the channel core's
        # (in C), with no Python call in between.  put() stays a method:
        # it turns a failed pickle into NotShareableError.
        self.get = handle.get   # type: ignore[method-assign]
        self.get_nowait = handle.get_nowait  # type: ignore[method-assign]
        self._put = handle.put
        _known_queues[self._id] = self
        return self

    @property
    def maxsize(self) -> int:
        """The capacity as create_queue() was given it (0 or less:
        unbounded); -1 for an unbounded queue made in another
        interpreter."""
        return self._maxsize

    @property
    def unbounditems(self) -> UnboundItem:
        """What get() returns for an item whose interpreter ended (the
        default of put())."""
        return self._handle.unbounditems

    def empty(self) -> bool:
        return self._handle.empty()

    def full(self) -> bool:
        return self._handle.full()

    def qsize(self) -> int:
        return self._handle.qsize()

    def put(self, obj: object, block: bool = True,
            timeout: float | None = None, *,
            unbounditems: UnboundItem | None = None) -> None:
        """Add obj; with block, wait while the queue is full (at most
        timeout seconds, then QueueFull).  ``unbounditems`` says what
        get() returns for it if this interpreter ends first."""
        try:
            self._put(obj, block, timeout, unbounditems=unbounditems)
        except TypeError as exc:
            _not_shareable(obj, exc)
            raise

    def put_nowait(self, obj: object, *,
                   unbounditems: UnboundItem | None = None) -> None:
        """put() without waiting: QueueFull when full."""
        try:
            self._handle.put_nowait(obj, unbounditems=unbounditems)
        except TypeError as exc:
            _not_shareable(obj, exc)
            raise

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next object; with block, wait while the
        queue is empty (at most timeout seconds, then QueueEmpty)."""
        return self._handle.get(block, timeout)

    def get_nowait(self) -> Any:
        """get() without waiting: QueueEmpty when empty."""
        return self._handle.get_nowait()


def _not_shareable(obj: object, exc: TypeError) -> None:
    """Raise NotShareableError for obj, from exc, when exc is the error of
    pickling an object that cannot be shared (PEP 734's error for it);
    return otherwise."""
    if isinstance(exc, NotShareableError) or _is_shareable(obj):
        return
    raise NotShareableError(
        f"{type(obj).__name__} objects cannot be shared, and pickling this "
        f"one failed: {exc}") from exc


def create_queue(maxsize: int = -1, *,
                 unbounditems: UnboundItem = UNBOUND) -> Queue:
    """A new queue.  A maxsize of 0 or less means unbounded (and is
    reported back as given).  ``unbounditems`` is put()'s default:
    UNBOUND, UNBOUND_ERROR or UNBOUND_REMOVE."""
    maxsize = _check_id(maxsize, "maxsize")
    handle = _Handle(maxsize if maxsize > 0 else 0,
                     unbounditems=unbounditems)
    return Queue._wrap(handle, maxsize)
