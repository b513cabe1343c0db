"""fork() and process exit: a child made by fork() while other threads
used tpshare neither hangs nor reuses what belongs to the parent
(channels, tokens, interpreters), and works with what it makes itself;
every channel wait honours its timeout, the channel's own lock included;
at exit, tpshare waits in the interpreters tpshare made end, so a script
interrupted by Ctrl-C exits instead of waiting for them forever.

Everything that could hang runs in a child process with a hard timeout:
a hang fails the test instead of blocking the suite."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from support import run_child

# Each forked grandchild must be done within this many seconds (it needs
# milliseconds); one that is not is killed and counted as hung.
FORK_PRELUDE = """
import os, sys, threading, time, warnings
import tpshare
# "This process is multi-threaded, use of fork() may lead to deadlocks":
# exactly what is tested.
warnings.simplefilter("ignore", DeprecationWarning)

HARD_TIMEOUT = 10.0

def reap(pid):
    '''The exit code of the forked child `pid`, or 'hung' (it is killed).'''
    deadline = time.monotonic() + HARD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.001)

def child_exit(code):
    '''End a forked child normally (threading's shutdown, exit hooks,
    finalization).  Under a sanitizer it ends with os._exit instead: a
    child keeps what the parent's vanished threads held (their caches,
    their calls' buffers, the items of channels made before the fork) and
    can never free it, which LeakSanitizer would report at exit.'''
    if os.environ.get("TPSHARE_SANITIZE", "0") not in ("", "0"):
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)

def refused(op):
    '''Whether op() raises ChannelClosed naming fork().'''
    try:
        op()
    except tpshare.ChannelClosed as exc:
        return "before fork()" in str(exc)
    return False

def new_channel_works():
    '''A channel made in the child carries items between its threads.'''
    ch = tpshare.Channel(maxsize=2)
    t = threading.Thread(target=lambda: [ch.send(i) for i in range(50)])
    t.start()
    got = [ch.recv(timeout=HARD_TIMEOUT) for _ in range(50)]
    t.join()
    return got == list(range(50)) and ch.stats()["sent"] == 50
"""


def run_fork_script(body, timeout=120):
    r = run_child(FORK_PRELUDE + textwrap.dedent(body), timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == "", r.stderr
    return r.stdout


def test_fork_while_threads_hammer_a_channel():
    """100 forks while four threads send and receive batches on a bounded
    channel (so they take its lock without the GIL, in their waits): each
    child gets a clear error from the old channel at once, timed or not,
    works with a new one, and exits 0; the parent's channel goes on."""
    out = run_fork_script("""
        B = 2000
        ch = tpshare.Channel(maxsize=B)
        items = list(range(B))
        stop = threading.Event()

        def sender():
            while not stop.is_set():
                try:
                    ch.send_many(items, timeout=0.05)
                    ch.send(-1, timeout=0.05)
                except tpshare.ChannelFull:
                    pass

        def receiver():
            while not stop.is_set():
                try:
                    ch.recv_many(B, timeout=0.05)
                    ch.recv(timeout=0.05)
                except tpshare.ChannelEmpty:
                    pass

        threads = [threading.Thread(target=f)
                   for f in (sender, receiver, sender, receiver)]
        for t in threads:
            t.start()

        def child():
            ok = all([
                refused(lambda: ch.send(1, timeout=5)),
                refused(lambda: ch.recv(timeout=5)),
                refused(lambda: ch.recv()),          # untimed
                refused(lambda: ch.send_many([1, 2])),
                refused(lambda: ch.recv_many(10, timeout=0)),
                ch.closed and ch.qsize() == 0,
                new_channel_works(),
            ])
            return 0 if ok else 1

        codes = {}
        for i in range(100):
            pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    code = child()
                finally:
                    if i % 2:
                        os._exit(code)
                # Every other child exits normally: threading's shutdown,
                # exit hooks, finalization with the old channel alive.
                child_exit(code)
            code = reap(pid)
            codes[code] = codes.get(code, 0) + 1
            if code == "hung":
                break

        stop.set()
        for t in threads:
            t.join()
        # The parent's channel still works and lost nothing.
        while ch.qsize():
            ch.recv_many(B, timeout=5)
        ch.send("after", timeout=5)
        assert ch.recv(timeout=5) == "after"
        s = ch.stats()
        assert s["sent"] == s["received"], s
        print("codes", sorted(codes.items(), key=str))
        """)
    assert out == "codes [(0, 100)]\n"


def test_fork_while_a_channel_lock_is_held():
    """The deterministic case: the channel's lock is held at the moment
    of the fork (as by a thread inside a channel operation).  Without
    the fork handlers the child spins on it forever, whatever the
    timeout."""
    out = run_fork_script("""
        ch = tpshare.Channel(maxsize=4)
        ch.send("queued")
        mem = tpshare.MemChannel()
        tpshare._tpshare._hold_channel_lock(ch.id, True)
        tpshare._tpshare._hold_channel_lock(mem.id, True)
        pid = os.fork()
        if pid == 0:
            ok = all([
                refused(lambda: ch.send(1, timeout=1)),
                refused(lambda: ch.recv(timeout=1)),
                refused(lambda: ch.recv()),
                refused(lambda: mem.send(b"x", timeout=1)),
                refused(lambda: tpshare.Channel.from_id(ch.id).recv()),
                new_channel_works(),
            ])
            ch.close()               # no hang; the fork error stays
            ok = ok and refused(lambda: ch.recv(timeout=0))
            os._exit(0 if ok else 1)
        print("child", reap(pid))
        tpshare._tpshare._hold_channel_lock(ch.id, False)
        tpshare._tpshare._hold_channel_lock(mem.id, False)
        print("parent", ch.recv(timeout=5), ch.closed)
        """)
    assert out == "child 0\nparent queued False\n"


def test_a_held_channel_lock_ends_a_wait_at_its_timeout():
    """Every wait honours its timeout, the channel's spin lock included:
    a lock nobody releases ends a timed send or recv with the timeout
    error, a non-blocking one too (after a short grace), instead of
    spinning forever."""
    r = run_child("""
        import tpshare
        hold = tpshare._tpshare._hold_channel_lock
        ch = tpshare.Channel(maxsize=1)
        ch.send("queued")
        q = tpshare.Queue()
        hold(ch.id, True)
        hold(q.id, True)
        for op in (lambda: ch.recv(timeout=0),
                   lambda: ch.recv(timeout=0.05),
                   lambda: ch.recv_many(5, timeout=0.05)):
            try:
                op()
            except tpshare.ChannelEmpty as exc:
                print(type(exc).__name__)
        for op in (lambda: ch.send(1, timeout=0.05),
                   lambda: q.put(1, timeout=0.05),
                   lambda: q.get(timeout=0)):
            try:
                op()
            except (tpshare.ChannelFull, tpshare.ChannelEmpty) as exc:
                print(type(exc).__name__)
        hold(ch.id, False)
        hold(q.id, False)
        print(ch.recv(timeout=5), q.qsize())
        """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ChannelEmpty"] * 3 + [
        "ChannelFull", "QueueFull", "QueueEmpty", "queued", "0"]


def test_fork_tokens_and_multiprocessing():
    """multiprocessing's fork start method: a token detached before the
    fork does not attach in the child (clear error); values detached in
    the child do; the parent still attaches its token."""
    out = run_fork_script("""
        import multiprocessing

        old = tpshare.share(("kept", 1)).detach()
        ch = tpshare.Channel()
        ch.send(b"x" * 1000)

        def target():
            ok = refused(lambda: ch.recv(timeout=5))
            try:
                tpshare.attach(old)
                ok = False
            except tpshare.Error as exc:
                ok = ok and "before fork()" in str(exc)
            new = tpshare.share(("new", 2)).detach()
            ok = ok and tpshare.attach(new).rebuild() == ("new", 2)
            ok = ok and new_channel_works()
            sys.exit(0 if ok else 1)

        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=target) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(HARD_TIMEOUT)
            if p.exitcode is None:
                p.kill()
                p.join()
        print("exitcodes", [p.exitcode for p in procs])
        print(tpshare.attach(old).rebuild(), len(ch.recv(timeout=5)))
        """)
    assert out == "exitcodes [0, 0, 0]\n('kept', 1) 1000\n"


def test_fork_while_the_interpreters_lock_is_held():
    """A thread of the parent in tpshare's interpreter bookkeeping at the
    moment of the fork (its lock held) does not leave the child unable
    to make interpreters or to exit.  (Interpreters themselves cannot be
    alive at a fork: CPython 3.12 and 3.13 crash the child then.)"""
    out = run_fork_script("""
        from tpshare import _interpreters

        with tpshare.Interpreter() as it:      # registers the exit hook
            it.call(tpshare.interpreter_id).result(timeout=30)
        held, release = threading.Event(), threading.Event()

        def holder():
            with _interpreters._hub.lock:
                held.set()
                release.wait()

        t = threading.Thread(target=holder)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            with tpshare.Interpreter() as it:
                iid = it.call(tpshare.interpreter_id).result(timeout=30)
            left = tpshare.Interpreter()       # ended at exit
            ok = iid == it.id and left.call(int, 7).result(timeout=30) == 7
            child_exit(0 if ok else 1)
        print("child", reap(pid))
        release.set()
        t.join()
        """)
    assert out == "child 0\n"


# ---------------------------------------------------------------------------
# Exit after Ctrl-C.

EXIT_SCRIPT = """
import signal, sys, threading, tpshare
# Ctrl-C raises KeyboardInterrupt even where the test run ignores SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)

ready = tpshare.Channel()
nobody_sends = tpshare.Channel()
full = tpshare.Channel(maxsize=1)
full.send(0)
mem = tpshare.MemChannel()

BLOCKED_IN = {
    "recv": "ready.send(1)\\nnobody_sends.recv()",
    "send": "ready.send(1)\\nfull.send(1)",
    "tracker": "t = mem.send(bytearray(100))\\nready.send(1)\\nt.wait()",
    # Unwinding evaluates code from a string (as an import that makes a
    # namedtuple does), which clears CPython's process-wide record of
    # the main script's KeyboardInterrupt.
    "eval": "ready.send(1)\\ntry:\\n    nobody_sends.recv()\\n"
            "finally:\\n    eval('0')",
    "thread": '''
import threading
t = threading.Thread(target=nobody_sends.recv)
t.start()
ready.send(1)
nobody_sends.recv(timeout=600)
''',
}

kinds = sys.argv[1:]
interps = [tpshare.Interpreter() for _ in kinds]
futures = [it.submit_exec(BLOCKED_IN[k], ready=ready, full=full,
                          nobody_sends=nobody_sends, mem=mem)
           for it, k in zip(interps, kinds)]
for _ in kinds:
    ready.recv(timeout=60)
print("blocked", flush=True)
futures[0].result()
"""


@pytest.mark.parametrize("kinds", [
    pytest.param(["recv"], id="one-in-recv"),
    pytest.param(["recv", "recv", "send", "tracker", "thread", "eval"],
                 id="several"),
])
def test_exit_after_ctrl_c_with_interpreters_blocked_in_tpshare(tmp_path,
                                                                kinds):
    """A script whose background interpreters are parked in tpshare waits
    that nothing will end (a recv nobody sends to, a send on a full
    channel, a Tracker.wait, a thread of the interpreter in a recv; one
    evaluates code as it unwinds) gets
    Ctrl-C while it waits for a result.  The waits are woken at exit, so
    the process ends with KeyboardInterrupt's status instead of waiting
    for them forever ("has not stopped" every 10 s)."""
    script = tmp_path / "blocked.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.abspath(__file__))]
        + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen(
        [sys.executable, str(script), *kinds], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "blocked\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("the process did not exit after Ctrl-C:\n" + err)
    assert "KeyboardInterrupt" in err
    assert "has not stopped" not in err
    assert proc.returncode == -signal.SIGINT, err
