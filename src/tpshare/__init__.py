"""tpshare: share objects and memory between CPython subinterpreters.

Values cross interpreters as share records made by per-type hooks from a
process-wide registry (the prototype of a ``tp_share`` slot).  See the
README and docs/ for the design and the API.
"""

# typing is not imported for this: a worker interpreter imports tpshare,
# and type checkers read the name TYPE_CHECKING as true.
TYPE_CHECKING = False

__version__ = "0.1.0.dev0"

# Needs nothing compiled: a build against tpshare.h works even where the
# extension below cannot be imported.
from ._include import get_include

try:
    from . import _tpshare
except ImportError as _exc:
    _core_error: ImportError | None = _exc

    def __getattr__(name: str) -> object:
        """Every name but get_include needs the compiled core: raise its
        import error (the caught one, as the cause) when one is used."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"tpshare.{name} needs tpshare's compiled core, which failed to "
            f"import ({_core_error}); only tpshare.get_include() works "
            "without it",
            name=__name__,
        ) from _core_error
else:
    _core_error = None
    from ._tpshare import (
        ABI_VERSION,
        Buffer,
        Channel,
        ChannelClosed,
        ChannelEmpty,
        ChannelFull,
        Error,
        ItemInterpreterDestroyed,
        MemChannel,
        NotShareableError,
        Queue,
        QueueEmpty,
        QueueFull,
        Shared,
        Tracker,
        UNBOUND,
        UNBOUND_ERROR,
        UNBOUND_REMOVE,
        View,
        _C_API,
        attach,
        bridge,
        drain,
        interpreter_id,
        is_shareable,
        origin_id,
        registered,
        share,
        stats,
    )

__all__ = [
    "ABI_VERSION",
    "Buffer",
    "Channel",
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelFull",
    "Error",
    "ItemInterpreterDestroyed",
    "MemChannel",
    "NotShareableError",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "Shared",
    "Tracker",
    "UNBOUND",
    "UNBOUND_ERROR",
    "UNBOUND_REMOVE",
    "View",
    "attach",
    "bridge",
    "drain",
    "get_include",
    "interpreter_id",
    "is_shareable",
    "origin_id",
    "registered",
    "share",
    "stats",
]

# Interpreters that run in the background (docs/interpreters.md), imported
# on first use: a worker interpreter imports tpshare to serve jobs and
# needs none of the owner side.
_INTERPRETER_NAMES = frozenset({
    "BrokenPool",
    "Interpreter",
    "InterpreterBusy",
    "InterpreterClosed",
    "Pool",
    "RemoteError",
    "list_interpreters",
})
# The PEP 734 executor (concurrent.futures' InterpreterPoolExecutor, which
# imports concurrent.futures) and the PEP 734 module.
_EXECUTOR_NAMES = frozenset({"BrokenInterpreterPool",
                             "InterpreterPoolExecutor"})

if TYPE_CHECKING:
    from . import interpreters as interpreters
    from ._executor import (
        BrokenInterpreterPool as BrokenInterpreterPool,
        InterpreterPoolExecutor as InterpreterPoolExecutor,
    )
    from ._interpreters import (
        BrokenPool as BrokenPool,
        Interpreter as Interpreter,
        InterpreterBusy as InterpreterBusy,
        InterpreterClosed as InterpreterClosed,
        Pool as Pool,
        RemoteError as RemoteError,
        list_interpreters as list_interpreters,
    )
elif _core_error is None:

    def __getattr__(name):
        if name in _INTERPRETER_NAMES:
            from . import _interpreters as module
        elif name in _EXECUTOR_NAMES:
            from . import _executor as module
        elif name == "interpreters":
            import importlib
            return importlib.import_module(".interpreters", __name__)
        else:
            raise AttributeError(
                f"module {__name__!r} has no attribute {name!r}")
        value = getattr(module, name)
        globals()[name] = value
        return value

    def __dir__():
        return sorted(set(globals()) | _INTERPRETER_NAMES | _EXECUTOR_NAMES
                      | {"interpreters"})

__all__ += [
    "BrokenInterpreterPool",
    "BrokenPool",
    "Interpreter",
    "InterpreterBusy",
    "InterpreterClosed",
    "InterpreterPoolExecutor",
    "Pool",
    "RemoteError",
    "list_interpreters",
]
