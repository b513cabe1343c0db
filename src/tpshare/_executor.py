"""``tpshare.InterpreterPoolExecutor``: CPython 3.14's
``concurrent.futures.InterpreterPoolExecutor`` on tpshare's pool (see
tpshare._interpreters): one implementation, two spellings.  Imported on
first use (``concurrent.futures`` costs an import that ``import
tpshare`` does not pay)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from ._interpreters import BrokenPool, Pool

__all__ = ["BrokenInterpreterPool", "InterpreterPoolExecutor"]


class BrokenInterpreterPool(BrokenPool, BrokenThreadPool):
    """The executor's initializer raised in one of its interpreters: the
    executor takes no more work, and the work queued fails with this."""


class InterpreterPoolExecutor(Pool, Executor):
    """An executor whose workers are tpshare interpreters, each with its
    own GIL and thread: ``concurrent.futures.InterpreterPoolExecutor``'s
    signature and behaviour (``submit``, ``map`` with ``timeout`` and
    ``chunksize``, ``shutdown(wait, cancel_futures=)``, ``initializer``
    run in each worker before its first task; an initializer that raises
    breaks the pool with ``BrokenInterpreterPool``).  Functions are sent
    by module and qualified name; arguments and results cross as tpshare
    shares them, or pickled when they cannot be shared.
    ``thread_name_prefix`` is kept for compatibility: the workers'
    threads are made by tpshare's core, not by ``threading``."""

    _fallback = True
    _broken_class = BrokenInterpreterPool

    def __init__(self, max_workers: int | None = None,
                 thread_name_prefix: str = "",
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        if not isinstance(thread_name_prefix, str):
            raise TypeError("thread_name_prefix must be a str, not "
                            f"{type(thread_name_prefix).__name__}")
        self._thread_name_prefix = (thread_name_prefix
                                    or f"InterpreterPoolExecutor-{id(self)}")
        self._init_args(max_workers, "max_workers", initializer, initargs)
        self._start(self._nworkers)

    def __repr__(self) -> str:
        return super().__repr__().replace("tpshare.Pool",
                                          "tpshare.InterpreterPoolExecutor")

    @property
    def _max_workers(self) -> int:
        return self._nworkers


for _cls in (BrokenInterpreterPool, InterpreterPoolExecutor):
    _cls.__module__ = "tpshare"
del _cls
