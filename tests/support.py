"""Helpers for the tests: real isolated subinterpreters from the standard
library, values moved through tpshare tokens, and child processes for
crash and teardown scenarios."""

import os
import subprocess
import sys
import textwrap

import tpshare
from tpshare import _stdinterp
from tpshare._stdinterp import RunFailedError as SubinterpreterError

# The standard library's interpreters, through the layer the benchmarks
# use too (tpshare._stdinterp).
_create = _stdinterp.create
_run = _stdinterp.run


class Sub:
    """An isolated subinterpreter with its own GIL, made by the standard
    library (not by tpshare), that code runs in from the calling thread."""

    def __init__(self):
        self.id = _create()
        self._rfd, self._wfd = os.pipe()
        self.run(f"import os, tpshare\n_tps_fd = {self._wfd}")

    def run(self, code):
        _run(self.id, textwrap.dedent(code))

    def put(self, name, value):
        """Bind `name` in the subinterpreter's __main__ to a rebuild of
        value (shared from here)."""
        token = tpshare.share(value).detach()
        self.run(f"{name} = tpshare.attach({token}).rebuild()")

    def get(self, expr):
        """Evaluate expr in the subinterpreter and return its value rebuilt
        here."""
        self.run(
            f"_tps_tok = tpshare.share({expr}).detach()\n"
            "os.write(_tps_fd, b'%d\\n' % _tps_tok)"
        )
        token = int(self._read_line())
        return tpshare.attach(token).rebuild()

    def get_shared(self, expr):
        """Like get() but return the tpshare.Shared, not its rebuild."""
        self.run(
            f"_tps_tok = tpshare.share({expr}).detach()\n"
            "os.write(_tps_fd, b'%d\\n' % _tps_tok)"
        )
        return tpshare.attach(int(self._read_line()))

    def eval(self, expr):
        """repr() of expr evaluated in the subinterpreter, as a str."""
        self.run(f"os.write(_tps_fd, repr({expr}).encode() + b'\\0')")
        return self._read_until(b"\0")

    def _read_line(self):
        return self._read_until(b"\n")

    def _read_until(self, end):
        buf = b""
        while not buf.endswith(end):
            buf += os.read(self._rfd, 1)
        return buf[:-1].decode()

    def close(self):
        if self.id is not None:
            _stdinterp.destroy(self.id)
            self.id = None
            os.close(self._rfd)
            os.close(self._wfd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Under a sanitizer freed memory sits in a quarantine (AddressSanitizer)
# or shadow memory grows with use (ThreadSanitizer), so resident memory
# says nothing about leaks there: memory-growth checks are skipped.
# tests/run.sh says which sanitizer runs in TPSHARE_SANITIZE.
SANITIZER = os.environ.get("TPSHARE_SANITIZE", "0")
if SANITIZER in ("", "0"):
    preload = os.environ.get("LD_PRELOAD", "")
    SANITIZER = ("address" if "libasan" in preload
                 else "thread" if "libtsan" in preload else "0")
SANITIZED = SANITIZER != "0"


def rss_kib():
    """Resident memory of this process, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# A child starts with Ctrl-C raising KeyboardInterrupt even when the test
# run was started with SIGINT ignored (as a background job of a
# non-interactive shell is): Python leaves an ignored SIGINT ignored.
CHILD_PRELUDE = ("import signal as _signal; "
                 "_signal.signal(_signal.SIGINT, _signal.default_int_handler)\n")


def run_child(code, timeout=120, env=None):
    """Run code in a fresh Python process; return CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c",
         CHILD_PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )


def run_bench(args, tmp_path, prelude="", timeout=240):
    """python -m tpshare.bench args in a child process whose working
    directory is tmp_path (prelude runs first, in the child);
    CompletedProcess."""
    code = textwrap.dedent(f"""\
        import sys
        {prelude}
        from tpshare.bench.cli import main
        sys.exit(main({list(args)!r}))
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)
