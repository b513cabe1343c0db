"""tpshare: share objects and memory between CPython subinterpreters.

Values cross interpreters as share records made by per-type hooks from a
process-wide registry (the prototype of a ``tp_share`` slot).  See the
README and docs/ for the design and the API.
"""

import os as _os

from . import _tpshare
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
    "drain",
    "get_include",
    "interpreter_id",
    "is_shareable",
    "origin_id",
    "registered",
    "share",
    "stats",
]

# Interpreters that run in the background (docs/interpreters.md).
from ._interpreters import (  # noqa: E402
    Interpreter,
    InterpreterBusy,
    InterpreterClosed,
    Pool,
    RemoteError,
    list_interpreters,
)

__all__ += [
    "Interpreter",
    "InterpreterBusy",
    "InterpreterClosed",
    "Pool",
    "RemoteError",
    "list_interpreters",
]

__version__ = "0.1.0.dev0"


def get_include() -> str:
    """The folder holding ``tpshare.h``, for building extensions."""
    return _os.path.join(_os.path.dirname(__file__), "include")
