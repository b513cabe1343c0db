"""The contenders: tpshare's two designs and every baseline, what each
can carry, whether it exists on this Python, and sessions that time it.

A session owns one transport in each direction, the far side (an
isolated interpreter, a thread or a child process running
``_remote.serve``) and its control channel.  The main thread of the main
interpreter is always the near side: it sends in throughput trials and
starts each ping-pong round trip.
"""

import importlib
import multiprocessing
import queue
import sys
import threading
import time

import tpshare

from . import _remote, runner

KINDS = ("bytes", "str", "int")


class Contender:
    """One transport under test.

    name     key in the command line, the JSON and the plots
    label    what the tables show
    ours     True for tpshare's own designs
    family   the _remote endpoint family
    where    "interp" (isolated interpreter), "thread" or "process"
    kinds    payload kinds it can carry ("bytes" means any buffer)
    options  extra endpoint options (after out, in)
    max_size largest payload it is timed with (None: every size)
    zero_copy True when no byte of the payload is copied on the way
             (a view, or a reference between threads): its rate is
             reported in messages/s only, as bytes/s would say nothing
    """

    def __init__(self, name, label, family, where, kinds, *, ours=False,
                 options=(), needs=(), spin=None, identity=None, note="",
                 max_size=None, zero_copy=False, load=None):
        self.name = name
        self.label = label
        self.family = family
        self.where = where
        self.kinds = tuple(kinds)
        self.ours = ours
        self.options = tuple(options)
        self.needs = tuple(needs)
        self.spin = spin
        self.identity = identity
        self.note = note
        self.max_size = max_size
        self.zero_copy = zero_copy
        # What imports each need: importlib's, unless the module's import
        # has side effects to undo (see _remote.backport_queues)
        self.load = load or importlib.import_module

    def unavailable(self):
        """None if it can run here, else the reason (it is then reported
        as skipped)."""
        for need in self.needs:
            if need.startswith("tpshare."):
                attr = need.split(".", 1)[1]
                if not hasattr(tpshare, attr):
                    return (f"{need} is not in this build of tpshare "
                            f"({tpshare.__version__})")
            else:
                alts = need.split("|")
                for mod in alts:
                    try:
                        self.load(mod)
                        break
                    except Exception:  # noqa: BLE001 - any failure: skip
                        # (a third-party package may fail to load with
                        # more than ImportError, e.g. a missing library)
                        pass
                else:
                    return (f"{' / '.join(alts)} not available on Python "
                            f"{sys.version.split()[0]}")
        return None

    def __repr__(self):
        return f"<Contender {self.name}>"


_CHANNEL_MOD = "_interpchannels|_xxinterpchannels"
# Import name of the interpreters-pep-734 backport's queues (on 3.12 it
# needs _interpqueues from another package, and is then skipped).
BACKPORT_MOD = "interpreters_backport.interpreters.queues"
# bocpy's queues have no bound: the largest payload timed through them
# (a throughput trial queues up to its n items).
BOCPY_MAX = 512
# bocpy's tags of a session, main -> far and back; a session drains both
# when it starts and when it ends (sessions of a contender never overlap).
BOCPY_TAGS = ("tpshare-bench-out", "tpshare-bench-back")
# The backport is timed up to this payload: its items are pickled and its
# receiver polls every 10 ms, so at 1 MiB a full run spent many minutes
# and gigabytes on it with nothing more to learn.
BACKPORT_MAX = 64 << 10

# The contenders, in the order tables and plots show them.
ALL = [
    Contender("memchannel", "MemChannel", "memchannel", "interp",
              ["bytes"], ours=True, zero_copy=True,
              note="zero-copy view of the sender's buffer; receiver "
                   "releases it"),
    Contender("memchannel-pickle", "MemChannel + pickle", "memchannel",
              "interp", ["str", "int"], ours=True, options=("pickle",),
              note="objects over the minimal design: send(pickle.dumps(x)), "
                   "pickle.loads(view) then view.release()"),
    Contender("channel", "Channel", "channel", "interp", KINDS, ours=True,
              note="objects: bytes >= 3 KiB shared, copied once on "
                   "receive; smaller values copied at send"),
    Contender("channel-view", "Channel (memoryview)", "channel", "interp",
              ["bytes"], ours=True, options=("view",), zero_copy=True,
              note="memoryviews through the Channel: zero-copy like "
                   "MemChannel, through the registry (the object layer's "
                   "cost on the same work)"),
    Contender("channel-batch", "Channel batches of 100", "channel",
              "interp", KINDS, ours=True, options=("batch",),
              note="send_many() of 100-item lists, recv_many(100): one "
                   "lock and one wake-up per batch (payloads up to 4 KiB: "
                   "a batch of larger copies is a memory test)",
              max_size=4 << 10),
    Contender("channel-id", "Channel identity=True", "channel", "interp",
              KINDS, ours=True, identity=True,
              note="with identity across messages (opt-in): the cost of "
                   "that bookkeeping"),
    Contender("channel-park", "Channel spin=0", "channel", "interp", KINDS,
              ours=True, spin=0.0,
              note="no spinning before parking (latency only)"),
    Contender("channel-spin500", "Channel spin=500us", "channel", "interp",
              KINDS, ours=True, spin=5e-4,
              note="spins 10 times longer than the default before parking "
                   "(latency only)"),
    Contender("tpshare-queue", "tpshare.Queue", "tpshare-queue", "interp",
              KINDS, ours=True, needs=["tpshare.Queue"],
              note="PEP 734 Queue API on a Channel"),
    Contender("cpython-queue", "CPython queue (XID)", "cpython-queue",
              "interp", KINDS, options=("xid", "spin"),
              needs=["_interpqueues"],
              note="_interpqueues syncobj=True, busy put/get retries"),
    Contender("cpython-queue-mv", "CPython queue (memoryview)",
              "cpython-queue", "interp", ["bytes"], options=("mv", "spin"),
              needs=["_interpqueues"], zero_copy=True,
              note="_interpqueues syncobj=True carrying memoryviews "
                   "(zero-copy), busy retries"),
    Contender("cpython-queue-pickle", "CPython queue (pickle)",
              "cpython-queue", "interp", KINDS, options=("pickle", "spin"),
              needs=["_interpqueues"],
              note="_interpqueues default mode (syncobj=False): pickled, "
                   "busy retries"),
    Contender("cpython-queue-poll", "CPython queue (blocking get)",
              "cpython-queue", "interp", KINDS, options=("xid", "sleep"),
              needs=["_interpqueues"],
              note="syncobj=True with the wrapper's blocking get(): "
                   "polls every 10 ms (latency only)"),
    Contender("cpython-channel", "CPython channel", "cpython-channel",
              "interp", KINDS, options=("spin",), needs=[_CHANNEL_MOD],
              note="_xxinterpchannels (3.12) / _interpchannels (3.13), "
                   "busy recv retries"),
    Contender("cpython-channel-poll", "CPython channel (blocking recv)",
              "cpython-channel", "interp", KINDS, options=("sleep",),
              needs=[_CHANNEL_MOD],
              note="the wrapper's blocking recv(): polls every 10 ms "
                   "(latency only)"),
    Contender("threads", "queue.Queue threads", "threads", "thread", KINDS,
              zero_copy=True,
              note="two threads of one interpreter: references, no copy"),
    Contender("mp-pipe", "mp Pipe", "mp-pipe", "process", KINDS,
              note="multiprocessing.Pipe to a child process: pickled"),
    Contender("mp-shm", "mp shared_memory", "mp-shm", "process", ["bytes"],
              note="multiprocessing.shared_memory slots, one copy in, "
                   "zero-copy view out, (offset, size) through a pipe"),
    Contender("bocpy", "bocpy send/receive", "bocpy", "interp", KINDS,
              needs=["bocpy"], max_size=BOCPY_MAX,
              note="bocpy.send(tag, x) / bocpy.receive(tag): process-wide "
                   "tagged queues, blocking receive, cross-interpreter "
                   "data; unbounded, so timed up to "
                   f"{BOCPY_MAX} B (a trial queues n items)"),
    Contender("backport-queue", "PEP 734 backport (10 ms polls)",
              "backport-queue", "interp", KINDS, needs=[BACKPORT_MOD],
              max_size=BACKPORT_MAX,
              load=lambda mod: _remote.backport_queues(),
              note="interpreters-pep-734's Queue, create(maxsize) (items "
                   "pickled), blocking put()/get() as users call them: "
                   "they sleep 10 ms while the queue is full or empty; "
                   "timed up to 64 KiB"),
]
BY_NAME = {c.name: c for c in ALL}
NAMES = tuple(BY_NAME)

THROUGHPUT = ("memchannel", "memchannel-pickle", "channel", "channel-view",
              "channel-batch", "channel-id",
              "tpshare-queue", "cpython-queue",
              "cpython-queue-mv", "cpython-queue-pickle", "cpython-channel",
              "threads", "mp-pipe", "mp-shm", "bocpy", "backport-queue")
LATENCY = ("channel", "channel-park", "channel-spin500", "memchannel",
           "tpshare-queue",
           "cpython-queue", "cpython-queue-poll", "cpython-channel",
           "cpython-channel-poll", "threads", "mp-pipe", "bocpy",
           "backport-queue")


def split_available(names):
    """([available Contender], {name: why not}) for the names given."""
    active, skipped = [], {}
    for n in names:
        c = BY_NAME[n]
        why = c.unavailable()
        if why:
            skipped[n] = why
        else:
            active.append(c)
    return active, skipped


class SessionError(RuntimeError):
    """The far side of a session failed or stopped answering."""


def _mp():
    # spawn: the parent has threads (fork would copy their locks), and it
    # is what other platforms do.
    return multiprocessing.get_context("spawn")


class Session:
    """One contender, ready to time: transports both ways and the far side
    serving them."""

    def __init__(self, contender, capacity, runner_name):
        self.c = contender
        self.capacity = capacity
        self._keep = []            # handles that keep transports alive
        self._cleanup = []         # callables run at close()
        self._job = self._thread = self._proc = self._worker = None
        self.closed = False
        try:
            main_spec, far_spec = self._transports()
            self.ep = _remote.endpoint(main_spec)
            self._start_far(far_spec, runner_name)
        except BaseException:
            self.close()
            raise

    # -- set-up ------------------------------------------------------------

    def _transports(self):
        """(main side spec, far side spec) for the contender."""
        c, cap = self.c, self.capacity
        fam = c.family
        if fam in ("channel", "memchannel"):
            cls = tpshare.Channel if fam == "channel" else tpshare.MemChannel
            kw = {} if c.spin is None else {"spin": c.spin}
            if c.identity is not None:
                kw["identity"] = c.identity
            a, b = cls(cap, **kw), cls(cap, **kw)
            self._keep += [a, b]
            self._cleanup += [a.close, b.close]
            return ((fam, a.id, b.id, *c.options),
                    (fam, b.id, a.id, *c.options))
        if fam == "tpshare-queue":
            a, b = tpshare.Queue(cap), tpshare.Queue(cap)
            self._keep += [a, b]
            tok = [tpshare.share(q).detach() for q in (a, b, b, a)]
            return (fam, tok[0], tok[1]), (fam, tok[2], tok[3])
        if fam == "cpython-queue":
            import _interpqueues as q
            fmt = 1 if c.options[0] == "pickle" else 0
            a, b = q.create(cap, fmt, 3), q.create(cap, fmt, 3)
            self._cleanup += [lambda: q.destroy(a), lambda: q.destroy(b)]
            return (fam, a, b, *c.options), (fam, b, a, *c.options)
        if fam == "cpython-channel":
            if sys.version_info >= (3, 13):
                import _interpchannels as ch
                ids = ch.create(3), ch.create(3)
            else:
                import _xxinterpchannels as ch
                ids = ch.create(), ch.create()
            # The ChannelID objects hold the channels: dropping the last
            # one destroys its channel.  The far side uses plain ints.
            self._keep += ids
            a, b = int(ids[0]), int(ids[1])
            self._cleanup += [lambda: ch.destroy(a), lambda: ch.destroy(b)]
            return (fam, a, b, *c.options), (fam, b, a, *c.options)
        if fam == "bocpy":
            import bocpy
            out, back = BOCPY_TAGS
            bocpy.drain([out, back])
            self._cleanup.append(lambda: bocpy.drain([out, back]))
            return (fam, out, back), (fam, back, out)
        if fam == "backport-queue":
            queues = _remote.backport_queues()
            a, b = queues.create(cap), queues.create(cap)
            # The Queue objects hold the queues; the far side binds its own
            # by ID.
            self._keep += [a, b]
            return (fam, a.id, b.id), (fam, b.id, a.id)
        if fam == "threads":
            a, b = queue.Queue(cap), queue.Queue(cap)
            return (fam, a, b), (fam, b, a)
        if fam == "mp-pipe":
            a_in, a_out = _mp().Pipe(duplex=False)
            b_in, b_out = _mp().Pipe(duplex=False)
            self._far_conns = [a_in, b_out]
            self._cleanup += [a_out.close, b_in.close]
            return (fam, a_out, b_in), (fam, b_out, a_in)
        if fam == "mp-shm":
            note_in, note_out = _mp().Pipe(duplex=False)
            ack_in, ack_out = _mp().Pipe(duplex=False)
            self._far_conns = [note_in, ack_out]
            self._cleanup += [note_out.close, ack_in.close]
            self._shm = None
            return (fam, note_out, ack_in), (fam, ack_out, note_in)
        raise ValueError(f"unknown family {fam}")

    def _start_far(self, spec, runner_name):
        where = self.c.where
        if where in ("interp", "thread"):
            self.ctl, self.res = tpshare.Channel(), tpshare.Channel()
            if where == "interp":
                self._worker = runner.new_worker(runner_name)
                self._job = self._worker.call(
                    "serve_in_interpreter", self.ctl.id, self.res.id, spec)
            else:
                self._thread = threading.Thread(
                    target=self._thread_main, args=(spec,), daemon=True)
                self._thread_error = None
                self._thread.start()
        else:
            ctx = _mp()
            ctl_in, self.ctl = ctx.Pipe(duplex=False)
            self.res, res_out = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(
                target=_remote.serve_in_process,
                args=(ctl_in, res_out, spec), daemon=True)
            self._proc.start()
            ctl_in.close()
            res_out.close()
            for conn in self._far_conns:
                conn.close()

    def _thread_main(self, spec):
        try:
            _remote.serve(self.ctl, self.res, spec)
        except BaseException as exc:  # noqa: BLE001 - reported by _reply
            self._thread_error = exc

    # -- talking to the far side -------------------------------------------

    def _far_failure(self):
        """The far side's error if it stopped, else None."""
        if self._job is not None and self._job.done():
            try:
                self._job.result(0)
            except runner.RemoteFailure as exc:
                return str(exc)
            return "the remote loop ended"
        if self._thread is not None and not self._thread.is_alive():
            return repr(self._thread_error)
        if self._proc is not None and not self._proc.is_alive():
            return f"the child process exited ({self._proc.exitcode})"
        return None

    def command(self, cmd, timeout=300):
        """Send cmd to the far side (see _remote.serve), without waiting."""
        self.ctl.send(cmd)

    def reply(self, timeout=300):
        """The far side's next answer, waiting up to timeout seconds while
        checking that it is still alive."""
        deadline = time.monotonic() + timeout
        while True:
            if self.c.where == "process":
                if self.res.poll(0.5):
                    return self.res.recv()
            else:
                try:
                    return self.res.recv(timeout=0.5)
                except tpshare.ChannelEmpty:
                    pass
            why = self._far_failure()
            if why is not None:
                raise SessionError(f"{self.c.name}: far side failed: {why}")
            if time.monotonic() > deadline:
                raise SessionError(f"{self.c.name}: no answer in {timeout} s")

    # -- experiments -------------------------------------------------------

    def prepare(self, size):
        """Per payload size set-up (shared memory slots), not timed."""
        if self.c.family != "mp-shm":
            return
        from multiprocessing import shared_memory

        nslots = max(2, min(8, (512 << 20) // max(size, 1)))
        slot = max(size, 1)
        old = self._shm
        shm = shared_memory.SharedMemory(create=True, size=slot * nslots)
        self._shm = shm
        self.command(("reconfigure", shm.name, slot, nslots))
        self.reply()
        self.ep.reconfigure(shm.name, slot, nslots, shm)
        if old is not None:
            old.unlink()

    def probe(self, payload):
        """Send one item; the far side's describe() of what it got."""
        self.command(("probe",))
        self.ep.send_n([payload], 1)

        got = self.reply()
        self.ep.after_trial()
        return tuple(got)

    def trial(self, payloads, n):
        """Send n items cycling through the list payloads; seconds from
        the first send to the far side having received (and consumed) the
        n-th."""
        self.command(("recv", n))
        send_n = self.ep.send_n
        t0 = time.perf_counter()
        send_n(payloads, n)
        t1 = self.reply()
        self.ep.after_trial()
        return t1 - t0

    def pingpong(self, n, pings):
        """n round trips (send one of pings, receive the far side's
        answer, of the same size); a list of round-trip times in ns."""
        self.command(("echo", n, len(pings[0])))
        send, recv, consume = self.ep.send, self.ep.recv, self.ep.consume
        clock = time.perf_counter_ns
        out = [0] * n
        k = len(pings)
        for i in range(n):
            ping = pings[i % k]
            t0 = clock()
            send(ping)
            got = recv()
            t1 = clock()
            consume(got)
            out[i] = t1 - t0
        del got
        self.reply()
        return out

    def wake(self, n, pause):
        """n one-way deliveries to a far side that has been waiting for
        `pause` seconds: ns from the send to the far side running with
        the item (a list)."""
        import struct
        self.command(("wake", n))
        send, clock, sleep = self.ep.send, time.perf_counter_ns, time.sleep
        pack = struct.pack
        pad = b"w" * 8
        for _ in range(n):
            sleep(pause)
            send(pack("q", clock()) + pad)
        self.ep.after_trial()
        return list(self.reply())

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            if self._job is not None or self._thread is not None \
                    or self._proc is not None:
                try:
                    self.ctl.send(None)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            if self._job is not None:
                try:
                    self._job.result(30)
                except (TimeoutError, runner.RemoteFailure):
                    pass
                self._worker.close()
            if self._thread is not None:
                self._thread.join(30)
            if self._proc is not None:
                self._proc.join(30)
                if self._proc.is_alive():
                    self._proc.kill()
        finally:
            ep = getattr(self, "ep", None)
            if ep is not None:
                ep.close()
            for fn in self._cleanup:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - best effort
                    pass
            shm = getattr(self, "_shm", None)
            if shm is not None:
                shm.close()
                shm.unlink()
            self._keep.clear()
