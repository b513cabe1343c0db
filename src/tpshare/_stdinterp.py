"""The thin layer over CPython's private interpreter modules that
tpshare's benchmarks and tests use to make interpreters tpshare did not
make: 3.13's ``_interpreters`` and 3.12's ``_xxsubinterpreters``, which
differ in how an interpreter is created and how code that raised is
reported.

Private: not part of tpshare's API, and nothing in the extension itself
depends on it.  Every interpreter made here is isolated (its own GIL).

- ``create()``: a new isolated interpreter; its ID.
- ``run(iid, code)``: run source code in that interpreter's ``__main__``
  on the calling thread; raises ``RunFailedError`` if the code raised.
- ``destroy(iid)``, ``list_all()``: CPython's own functions.
- ``Subinterpreter``: one such interpreter as a context manager.
- ``MODULE``: the CPython module in use.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any

__all__ = ["MODULE", "RunFailedError", "Subinterpreter", "create",
           "destroy", "list_all", "run"]


class RunFailedError(Exception):
    """Code run in an interpreter raised; the message is what CPython
    reports of the exception (a traceback on 3.13)."""


# The module as Any: its API differs between the versions (and type
# stubs know only 3.13's).
MODULE: Any
if sys.version_info >= (3, 13):
    import _interpreters
    MODULE = _interpreters

    def create() -> Any:
        """A new isolated interpreter (own GIL); its ID."""
        return MODULE.create("isolated")

    def run(iid: Any, code: str) -> None:
        """Run code in interpreter iid's __main__ on this thread."""
        err = MODULE.exec(iid, code)
        if err is not None:
            raise RunFailedError(err.errdisplay or err.formatted)

else:
    import _xxsubinterpreters  # type: ignore[import-not-found]
    MODULE = _xxsubinterpreters

    def create() -> Any:
        """A new isolated interpreter (own GIL); its ID."""
        return MODULE.create(isolated=True)

    def run(iid: Any, code: str) -> None:
        """Run code in interpreter iid's __main__ on this thread."""
        try:
            MODULE.run_string(iid, code)
        except MODULE.RunFailedError as exc:
            raise RunFailedError(str(exc)) from None


destroy = MODULE.destroy
list_all = MODULE.list_all


class Subinterpreter:
    """An isolated interpreter that code runs in from the calling thread;
    use as a context manager (destroyed on exit)."""

    def __init__(self) -> None:
        self.id = create()

    def run(self, code: str) -> None:
        """Run source code (dedented) in the interpreter's __main__."""
        run(self.id, textwrap.dedent(code))

    def close(self) -> None:
        if self.id is not None:
            destroy(self.id)
            self.id = None

    def __enter__(self) -> Subinterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
