import gc
import os
import sys
import time

import pytest

import tpshare
from support import Sub


@pytest.fixture
def sub():
    """A fresh isolated subinterpreter (own GIL), destroyed afterwards."""
    s = Sub()
    yield s
    gc.collect()
    s.close()


@pytest.fixture(scope="module")
def shared_sub():
    """One isolated subinterpreter reused by a whole test module."""
    s = Sub()
    yield s
    gc.collect()
    s.close()


@pytest.fixture(autouse=True)
def no_outstanding_exports():
    """Every test leaves the main interpreter with no export alive."""
    yield
    gc.collect()
    tpshare.drain()
    main = tpshare.stats().get(tpshare.interpreter_id())
    if main is not None:
        assert main["exports"] == 0, main
        assert main["pending"] == 0, main


def _children():
    """The processes whose parent is this one (Linux /proc), as
    {pid: command line}."""
    me, found = os.getpid(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The parent pid is the second field after the command's ")".
        if int(stat.rpartition(")")[2].split()[1]) == me:
            found[int(name)] = cmd.strip()[:200]
    return found


def pytest_sessionfinish(session, exitstatus):
    """No test leaves a process behind.  multiprocessing's forkserver and
    resource tracker, started by tests that use them, are stopped here and
    waited for: left running, they would end only after pytest, still
    writing (a sanitizer's log, for one) once the run is over.  Any other
    child still running fails the run."""
    from multiprocessing import forkserver, resource_tracker

    for helper in (getattr(forkserver, "_forkserver", None),
                   getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()
    deadline = time.monotonic() + 10
    left = _children()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        # Reap the ones that ended (zombies of processes nobody waited
        # for are gone then).
        for pid in left:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        left = _children()
    if left:
        print(f"\nprocesses left running by the tests: {left}",
              file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
