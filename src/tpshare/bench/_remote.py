"""Both ends of every transport, and the loops the far side runs.

This module is imported inside isolated subinterpreters (and threads and
child processes), so it imports only the standard library and tpshare,
and the modules of each baseline lazily: numpy and matplotlib cannot be
imported in an isolated interpreter.

An *endpoint* is one side of a transport: ``send(obj)``, ``recv()``,
``consume(obj)`` (what a receiver does with what it got: release a
view), and the tight loops ``send_n(objs, n)`` (n sends, cycling through
the list objs) and ``recv_n(n)`` used to time throughput, with every
name they use bound to a local.  A *spec*
names a transport and the side: ``(family, out, in, *options)`` where
``out`` is what this side sends on and ``in`` what it receives from
(IDs for cross-interpreter transports, objects for threads and pipes).

The far side of an experiment runs ``serve(ctl, res, spec)``: it obeys
commands from the ``ctl`` channel and answers on ``res`` (tpshare
Channels, or multiprocessing connections in a child process).
"""

import gc
import itertools
import math
import pickle
import struct
import sys
import time

import tpshare

repeat = itertools.repeat
cycle = itertools.cycle
islice = itertools.islice
perf = time.perf_counter
clock_ns = time.perf_counter_ns

# CPython's blocking calls poll with this sleep (3.12 channels, 3.13
# queues: ``_delay=10 / 1000``).
CPYTHON_POLL_DELAY = 0.010


# ---------------------------------------------------------------------------
# Endpoints.


class Endpoint:
    """Base: per-message send/recv; loops built on them (subclasses
    override the loops with tighter ones)."""

    def consume(self, obj):
        pass

    def send_n(self, objs, n):
        send = self.send
        for obj in islice(cycle(objs), n):
            send(obj)

    def recv_n(self, n):
        recv, consume = self.recv, self.consume
        for _ in repeat(None, n):
            consume(recv())

    def after_trial(self):
        """Called on the sending side after a timed loop (not timed)."""

    def reconfigure(self, *args):
        raise NotImplementedError

    def close(self):
        pass


class TpshareChannel(Endpoint):
    """tpshare.Channel: objects in, objects out.

    mode "view" sends a memoryview of each payload instead, which the
    Channel shares zero-copy through the registry's buffer handler: the
    same work as MemChannel, through the object layer.  mode "batch"
    moves the timed loops' items with ``send_many`` (lists of BATCH
    items, made before the clock starts) and ``recv_many(BATCH)``."""

    BATCH = 100

    def __init__(self, out_id, in_id, mode="object"):
        self.out = None if out_id is None else tpshare.Channel.from_id(out_id)
        self.inp = None if in_id is None else tpshare.Channel.from_id(in_id)
        self.views = mode == "view"
        self.batch = mode == "batch"
        self._pool = (None, None)
        self._batches = (None, None)
        if self.out is not None:
            self.send = self.out.send
        if self.inp is not None:
            self.recv = self.inp.recv

    def consume(self, obj):
        if self.views:
            obj.release()

    def _wire(self, objs):
        if not self.views:
            return objs
        if self._pool[0] is not objs:
            self._pool = (objs, [memoryview(o) for o in objs])
        return self._pool[1]

    def _batches_of(self, objs):
        """Lists of BATCH items cycling through objs (cached per list)."""
        if self._batches[0] is not objs:
            b = self.BATCH
            k = len(objs) * b // math.gcd(len(objs), b)
            flat = list(islice(cycle(objs), k))
            self._batches = (objs, [flat[i:i + b] for i in range(0, k, b)])
        return self._batches[1]

    def send_n(self, objs, n):
        if self.batch:
            batches = self._batches_of(objs)
            send_many, k = self.out.send_many, len(batches)
            full, rest = divmod(n, self.BATCH)
            for i in range(full):
                send_many(batches[i % k])
            if rest:
                send_many(batches[full % k][:rest])
            return
        send = self.send
        for obj in islice(cycle(self._wire(objs)), n):
            send(obj)

    def recv_n(self, n):
        if self.batch:
            recv_many, b = self.inp.recv_many, self.BATCH
            while n >= b:
                n -= len(recv_many(b))
            while n > 0:
                n -= len(recv_many(n))
            return
        recv = self.recv
        if self.views:
            for _ in repeat(None, n):
                recv().release()
            return
        for _ in repeat(None, n):
            recv()


class TpshareMemChannel(Endpoint):
    """tpshare.MemChannel: buffers in, zero-copy memoryviews out; the
    receiver releases each view (which releases the sender's export).

    mode "pickle" is what a program that needs objects does with the
    minimal design: ``send(pickle.dumps(obj))``, and
    ``pickle.loads(view)`` then ``view.release()`` on receipt."""

    def __init__(self, out_id, in_id, mode="buffer"):
        self.out = (None if out_id is None
                    else tpshare.MemChannel.from_id(out_id))
        self.inp = None if in_id is None else tpshare.MemChannel.from_id(in_id)
        self.pickled = mode == "pickle"
        if self.out is not None:
            self.send = self.out.send
            if self.pickled:
                send, dumps = self.out.send, pickle.dumps
                self.send = lambda obj: send(dumps(obj))
        if self.inp is not None:
            self.recv = self.inp.recv
            if self.pickled:
                self.recv = self._recv_pickled

    def _recv_pickled(self):
        view = self.inp.recv()
        try:
            return pickle.loads(view)
        finally:
            view.release()

    def consume(self, view):
        if not self.pickled:
            view.release()

    def send_n(self, objs, n):
        send = self.out.send
        if self.pickled:
            dumps = pickle.dumps
            for obj in islice(cycle(objs), n):
                send(dumps(obj))
            return
        for obj in islice(cycle(objs), n):
            send(obj)

    def recv_n(self, n):
        recv = self.inp.recv
        if self.pickled:
            loads = pickle.loads
            for _ in repeat(None, n):
                view = recv()
                loads(view)
                view.release()
            return
        for _ in repeat(None, n):
            recv().release()


class TpshareQueue(Endpoint):
    """tpshare.Queue (PEP 734's Queue API on a Channel), passed as
    detached tokens."""

    def __init__(self, out_tok, in_tok):
        rebuild = lambda tok: tpshare.attach(tok).rebuild()  # noqa: E731
        self.out = None if out_tok is None else rebuild(out_tok)
        self.inp = None if in_tok is None else rebuild(in_tok)
        if self.out is not None:
            self.send = self.out.put
        if self.inp is not None:
            self.recv = self.inp.get

    def recv_n(self, n):
        get = self.recv
        for _ in repeat(None, n):
            get()


def _errors_of_interpqueues(q):
    """The exceptions _interpqueues raises for an empty and a full queue
    (3.13 raises classes registered by test.support.interpreters.queues,
    imported on first use), found on a scratch queue."""
    qid = q.create(1, 0, 3)
    try:
        try:
            q.get(qid)
        except Exception as exc:  # noqa: BLE001 - whatever it raises
            empty = type(exc)
        else:
            raise RuntimeError("an empty _interpqueues queue gave an item")
        q.put(qid, 0, 0, 3)
        try:
            q.put(qid, 0, 0, 3)
        except Exception as exc:  # noqa: BLE001
            full = type(exc)
        else:
            raise RuntimeError("a full _interpqueues queue took an item")
    finally:
        q.destroy(qid)
    return empty, full


class CPythonQueue(Endpoint):
    """CPython 3.13's _interpqueues, driven the way its Python wrapper
    (test.support.interpreters.queues) does: ``put``/``get`` that fail
    at once on a full or empty queue, retried.  mode "xid" sends objects
    as cross-interpreter data (``syncobj=True``), "mv" sends a
    memoryview of the payload (zero-copy, XIBufferView), "pickle"
    pickles in the sender and unpickles in the receiver (the wrapper's
    default, ``syncobj=False``).  poll "spin" retries at once (the best
    case: a core busy per waiting side), "sleep" sleeps 10 ms between
    tries as the wrapper's blocking ``put``/``get`` do."""

    def __init__(self, out_qid, in_qid, mode="xid", poll="spin"):
        import _interpqueues as q

        self.q = q
        self.Empty, self.Full = _errors_of_interpqueues(q)
        self.out, self.inp, self.mode, self.poll = out_qid, in_qid, mode, poll
        self.fmt = 1 if mode == "pickle" else 0
        self._mv_cache = None

    def _wire(self, obj):
        if self.mode == "pickle":
            return pickle.dumps(obj)
        if self.mode == "mv":
            return memoryview(obj)
        return obj

    def send(self, obj):
        put, qid, fmt, Full = self.q.put, self.out, self.fmt, self.Full
        wire = self._wire(obj)
        while True:
            try:
                put(qid, wire, fmt, 3)
                return
            except Full:
                if self.poll == "sleep":
                    time.sleep(CPYTHON_POLL_DELAY)

    def recv(self):
        get, qid, Empty = self.q.get, self.inp, self.Empty
        sleep = time.sleep if self.poll == "sleep" else None
        while True:
            try:
                obj = get(qid)[0]
                break
            except Empty:
                if sleep is not None:
                    sleep(CPYTHON_POLL_DELAY)
        if self.mode == "pickle":
            return pickle.loads(obj)
        return obj

    def consume(self, obj):
        if self.mode == "mv":
            obj.release()

    def send_n(self, objs, n):
        put, qid, fmt, Full = self.q.put, self.out, self.fmt, self.Full
        if self.mode in ("pickle", "mv"):
            wire_of = pickle.dumps if self.mode == "pickle" else memoryview
            for obj in islice(cycle(objs), n):
                wire = wire_of(obj)
                while True:
                    try:
                        put(qid, wire, fmt, 3)
                        break
                    except Full:
                        pass
            return
        for obj in islice(cycle(objs), n):
            while True:
                try:
                    put(qid, obj, fmt, 3)
                    break
                except Full:
                    pass

    def recv_n(self, n):
        get, qid, Empty = self.q.get, self.inp, self.Empty
        i = 0
        if self.mode == "pickle":
            loads = pickle.loads
            while i < n:
                try:
                    item = get(qid)
                except Empty:
                    continue
                loads(item[0])
                i += 1
        elif self.mode == "mv":
            while i < n:
                try:
                    item = get(qid)
                except Empty:
                    continue
                item[0].release()
                i += 1
        else:
            while i < n:
                try:
                    get(qid)
                except Empty:
                    continue
                i += 1


class CPythonChannel(Endpoint):
    """CPython's low-level channels (3.12 ``_xxinterpchannels``, 3.13
    ``_interpchannels``): send never blocks (3.13: ``blocking=False``),
    recv returns a default when empty and is retried (poll "spin") or
    retried every 10 ms (poll "sleep", as the Python wrapper's blocking
    ``recv`` does).  Objects cross as cross-interpreter data."""

    def __init__(self, out_cid, in_cid, poll="spin"):
        self.new = sys.version_info >= (3, 13)
        if self.new:
            import _interpchannels as c
        else:
            import _xxinterpchannels as c
        self.c, self.out, self.inp, self.poll = c, out_cid, in_cid, poll
        self.sentinel = object()

    def send(self, obj):
        if self.new:
            self.c.send(self.out, obj, 3, blocking=False)
        else:
            self.c.send(self.out, obj)

    def recv(self):
        recv, cid, s = self.c.recv, self.inp, self.sentinel
        sleep = time.sleep if self.poll == "sleep" else None
        while True:
            got = recv(cid, s)
            if self.new:
                got = got[0]
            if got is not s:
                return got
            if sleep is not None:
                sleep(CPYTHON_POLL_DELAY)

    def send_n(self, objs, n):
        send, cid = self.c.send, self.out
        if self.new:
            for obj in islice(cycle(objs), n):
                send(cid, obj, 3, blocking=False)
        else:
            for obj in islice(cycle(objs), n):
                send(cid, obj)

    def recv_n(self, n):
        recv, cid, s = self.c.recv, self.inp, self.sentinel
        i = 0
        if self.new:
            while i < n:
                if recv(cid, s)[0] is not s:
                    i += 1
        else:
            while i < n:
                if recv(cid, s) is not s:
                    i += 1


class ThreadQueue(Endpoint):
    """queue.Queue between two threads of one interpreter (one GIL):
    references cross, nothing is copied."""

    def __init__(self, out_q, in_q):
        self.out, self.inp = out_q, in_q
        if out_q is not None:
            self.send = out_q.put
        if in_q is not None:
            self.recv = in_q.get

    def recv_n(self, n):
        get = self.recv
        for _ in repeat(None, n):
            get()


class Pipe(Endpoint):
    """multiprocessing connections (a pipe between processes): pickled
    in the sender, written to the pipe, read and unpickled."""

    def __init__(self, out_conn, in_conn):
        self.out, self.inp = out_conn, in_conn
        if out_conn is not None:
            self.send = out_conn.send
        if in_conn is not None:
            self.recv = in_conn.recv

    def recv_n(self, n):
        recv = self.recv
        for _ in repeat(None, n):
            recv()


_SLOT = struct.Struct("QQ")


def _attach_shm(name):
    from multiprocessing import shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    # 3.12 registers the segment again with the parent's resource tracker
    # (a set: no harm); the parent's unlink() unregisters it.
    return shared_memory.SharedMemory(name)


class SharedMemorySlots(Endpoint):
    """multiprocessing.shared_memory used as a transport: the sender copies
    the payload into a free slot of a segment both processes mapped and
    sends (offset, length) through a pipe; the receiver takes a
    memoryview of the slot (zero-copy), releases it and acknowledges,
    which frees the slot.  out/in are the notification and
    acknowledgement connections."""

    def __init__(self, out_conn, in_conn, name=None, slot=0, nslots=0):
        self.out, self.inp = out_conn, in_conn
        self.shm = None
        self.inflight = 0
        self.next = 0
        if name is not None:
            self.reconfigure(name, slot, nslots)

    def reconfigure(self, name, slot, nslots, shm=None):
        if self.shm is not None:
            self.buf = None
            self.shm.close()
        self.shm = shm if shm is not None else _attach_shm(name)
        self.buf = self.shm.buf
        self.slot, self.nslots = slot, nslots
        self.inflight = self.next = 0

    def send(self, obj):
        if self.inflight == self.nslots:
            self.inp.recv_bytes()
            self.inflight -= 1
        off = self.next * self.slot
        n = len(obj)
        self.buf[off:off + n] = obj
        self.out.send_bytes(_SLOT.pack(off, n))
        self.inflight += 1
        self.next = (self.next + 1) % self.nslots

    def send_n(self, objs, n):
        buf, out, inp, slot, nslots = (self.buf, self.out, self.inp,
                                       self.slot, self.nslots)
        send_bytes, recv_bytes, pack = out.send_bytes, inp.recv_bytes, \
            _SLOT.pack
        size = len(objs[0])
        inflight, nxt = self.inflight, self.next
        for obj in islice(cycle(objs), n):
            if inflight == nslots:
                recv_bytes()
                inflight -= 1
            off = nxt * slot
            buf[off:off + size] = obj
            send_bytes(pack(off, size))
            inflight += 1
            nxt = nxt + 1 if nxt + 1 < nslots else 0
        self.inflight, self.next = inflight, nxt

    def after_trial(self):
        while self.inflight:
            self.inp.recv_bytes()
            self.inflight -= 1

    def recv(self):
        off, n = _SLOT.unpack(self.inp.recv_bytes())
        return self.buf[off:off + n]

    def consume(self, view):
        view.release()
        self.out.send_bytes(b"a")

    def recv_n(self, n):
        buf, recv_bytes, send_bytes, unpack = (self.buf, self.inp.recv_bytes,
                                               self.out.send_bytes,
                                               _SLOT.unpack)
        for _ in repeat(None, n):
            off, size = unpack(recv_bytes())
            buf[off:off + size].release()
            send_bytes(b"a")

    def close(self):
        if self.shm is not None:
            self.buf = None
            self.shm.close()
            self.shm = None


class BocpyMessages(Endpoint):
    """bocpy's tagged message queues (``bocpy.send(tag, obj)``,
    ``bocpy.receive(tag)``), process-wide and reachable from every
    interpreter by tag; each side sends on tag ``out`` and receives on
    tag ``in``.  ``receive`` blocks until a message arrives and returns
    ``(tag, contents)``; ``send`` never blocks (the queues are
    unbounded).  Objects cross as cross-interpreter data.

    This is bocpy's messaging as its documentation shows it, and the
    fastest way it offers: ``receive(tag)`` without a timeout spins
    briefly and then parks on a condition variable (with a timeout it
    would sleep with backoff instead), and ``set_tags()`` only fixes
    which of its 16 queues a tag uses.  Every ``send`` releases the GIL
    and yields the CPU (one sched_yield system call per message, seen
    with strace), so its rate depends on the machine's load far more
    than a channel's: see docs/benchmarks.md."""

    def __init__(self, out_tag, in_tag):
        import bocpy

        self.out, self.inp = out_tag, in_tag
        self._send, self._receive = bocpy.send, bocpy.receive

    def send(self, obj):
        self._send(self.out, obj)

    def recv(self):
        return self._receive(self.inp)[1]

    def send_n(self, objs, n):
        send, tag = self._send, self.out
        for obj in islice(cycle(objs), n):
            send(tag, obj)

    def recv_n(self, n):
        receive, tag = self._receive, self.inp
        for _ in repeat(None, n):
            receive(tag)


def backport_queues():
    """The interpreters-pep-734 backport's queues module (imported as its
    users do: ``interpreters_backport.interpreters.queues``).

    Importing it registers its Queue classes with ``_interpqueues`` in
    place of those of CPython's own module (3.13's
    ``test.support.interpreters.queues``), after which CPython's Queue
    objects no longer cross interpreters in this interpreter.  The
    benchmarks pass the backport's queues by ID, so CPython's
    registration is put back when its module was loaded first (a module
    loaded later registers itself)."""
    name = "interpreters_backport.interpreters.queues"
    queues = sys.modules.get(name)
    if queues is not None:
        return queues
    from interpreters_backport.interpreters import queues

    std = sys.modules.get("test.support.interpreters.queues")
    if std is not None:
        import _interpqueues

        _interpqueues._register_heap_types(std.Queue, std.QueueEmpty,
                                           std.QueueFull)
    return queues


class BackportQueue(Endpoint):
    """The interpreters-pep-734 backport's ``Queue`` (PEP 734's pure
    Python layer over ``_interpqueues``), used as its users do: blocking
    ``put()`` and ``get()``, which retry every 10 ms while the queue is
    full or empty, with the default ``create(maxsize)`` (items pickled).
    Queues are found by ID on either side."""

    def __init__(self, out_qid, in_qid):
        queues = backport_queues()
        self.out = None if out_qid is None else queues.Queue(out_qid)
        self.inp = None if in_qid is None else queues.Queue(in_qid)
        if self.out is not None:
            self.send = self.out.put
        if self.inp is not None:
            self.recv = self.inp.get

    def send_n(self, objs, n):
        put = self.out.put
        for obj in islice(cycle(objs), n):
            put(obj)

    def recv_n(self, n):
        get = self.recv
        for _ in repeat(None, n):
            get()


FAMILIES = {
    "channel": TpshareChannel,
    "memchannel": TpshareMemChannel,
    "tpshare-queue": TpshareQueue,
    "cpython-queue": CPythonQueue,
    "cpython-channel": CPythonChannel,
    "threads": ThreadQueue,
    "mp-pipe": Pipe,
    "mp-shm": SharedMemorySlots,
    "bocpy": BocpyMessages,
    "backport-queue": BackportQueue,
}


def endpoint(spec):
    """The endpoint for spec = (family, out, in, *options)."""
    family, *args = spec
    return FAMILIES[family](*args)


# ---------------------------------------------------------------------------
# What the far side runs.


def describe(obj):
    """(type name, size) of a received object: for checking that each
    transport delivers what it claims."""
    if isinstance(obj, memoryview):
        return ("memoryview", obj.nbytes)
    if isinstance(obj, (bytes, bytearray, str)):
        return (type(obj).__name__, len(obj))
    if isinstance(obj, int):
        return ("int", obj.bit_length())
    return (type(obj).__name__, -1)


def serve(ctl, res, spec):
    """Obey commands until None arrives on ctl:

    ("probe",)           receive one item, answer describe(item)
    ("recv", n)          receive n items, answer the perf_counter() after
    ("echo", n, size)    n times: receive one item, answer with one of
                         2048 distinct size-byte bytes objects; answer 0
    ("reconfigure", *a)  endpoint.reconfigure(*a); answer 0
    ("wake", n)          n times: receive an item that starts with the
                         sender's perf_counter_ns() (8 bytes, native
                         order) and take the clock at once; answer the
                         n differences (ns) as a tuple
    ("semwake", slot, n) the same through the bare semaphore in slot
                         (tpshare.bench._probes), without the endpoint:
                         the Python-level floor of a wake-up

    ctl and res are tpshare Channels or multiprocessing connections.
    """
    ep = endpoint(spec)
    try:
        while True:
            cmd = ctl.recv()
            if cmd is None:
                break
            op = cmd[0]
            if op == "probe":
                obj = ep.recv()
                res.send(describe(obj))
                ep.consume(obj)
                del obj
            elif op == "recv":
                gc.disable()
                try:
                    ep.recv_n(cmd[1])
                    t = perf()
                finally:
                    gc.enable()
                res.send(t)
            elif op == "echo":
                _echo(ep, cmd[1], cmd[2])
                res.send(0)
            elif op == "reconfigure":
                ep.reconfigure(*cmd[1:])
                res.send(0)
            elif op == "wake":
                res.send(_wakes(ep, cmd[1]))
            elif op == "semwake":
                res.send(_sem_wakes(cmd[1], cmd[2]))
            else:
                raise ValueError(f"unknown command {op!r}")
    finally:
        ep.close()


def distinct_bytes(size, k=2048, tag=b"p"):
    """k distinct bytes objects of size bytes (a pool that defeats any
    cache of received objects, such as the Channel's identity)."""
    return [(tag + b"%015d" % i + b"x" * size)[:size] for i in range(k)]


def _echo(ep, n, size):
    recv, send, consume = ep.recv, ep.send, ep.consume
    replies = islice(cycle(distinct_bytes(size, tag=b"q")), n)
    gc.disable()
    try:
        for reply in replies:
            consume(recv())
            send(reply)
    finally:
        gc.enable()


def _wakes(ep, n):
    recv, consume, unpack = ep.recv, ep.consume, struct.unpack_from
    out = [0] * n
    gc.disable()
    try:
        for i in range(n):
            obj = recv()
            t = clock_ns()
            out[i] = t - unpack("q", obj)[0]
            consume(obj)
    finally:
        gc.enable()
    return tuple(out)


def _sem_wakes(slot, n):
    """_wakes() through a bare semaphore: the stamp comes with the post."""
    from . import _probes
    wait = _probes._sem_wait
    out = [0] * n
    gc.disable()
    try:
        for i in range(n):
            stamp = wait(slot, 60.0)
            out[i] = clock_ns() - stamp
    finally:
        gc.enable()
    return tuple(out)


def serve_in_interpreter(ctl_id, res_id, spec):
    """serve() with control through tpshare Channels found by ID (the
    entry point for isolated interpreters)."""
    serve(tpshare.Channel.from_id(ctl_id), tpshare.Channel.from_id(res_id),
          spec)


def serve_in_process(ctl_conn, res_conn, spec):
    """serve() in a child process, control through its pipes."""
    try:
        serve(ctl_conn, res_conn, spec)
    finally:
        ctl_conn.close()
        res_conn.close()


# ---------------------------------------------------------------------------
# Release latency (MemChannel trackers against an acknowledgement).


def serve_release(ctl_id, res_id, mem_id, ack_id):
    """Commands on ctl:

    ("release", n)  n times: receive a view, stamp perf_counter_ns(),
                    release it, send the stamp on res (after the release)
    ("ack", n)      n times: receive a view, release it, stamp, send the
                    stamp on the ack Channel (the message the sender waits
                    for)
    """
    ctl = tpshare.Channel.from_id(ctl_id)
    res = tpshare.Channel.from_id(res_id)
    mem = tpshare.MemChannel.from_id(mem_id)
    ack = tpshare.Channel.from_id(ack_id)
    recv, ack_send, res_send = mem.recv, ack.send, res.send
    while True:
        cmd = ctl.recv()
        if cmd is None:
            break
        op, n = cmd
        gc.disable()
        try:
            if op == "release":
                for _ in repeat(None, n):
                    view = recv()
                    t = clock_ns()
                    view.release()
                    res_send(t)
            elif op == "ack":
                for _ in repeat(None, n):
                    recv().release()
                    ack_send(clock_ns())
            else:
                raise ValueError(f"unknown command {op!r}")
        finally:
            gc.enable()
        res.send(0)


# ---------------------------------------------------------------------------
# Parallel scaling: CPU-bound pure Python.


def cpu_work(n):
    """n iterations of integer arithmetic in pure Python (no allocation
    beyond small ints, no I/O): CPU-bound under any GIL."""
    x = 0
    for i in range(n):
        x = (x * 1103515245 + i) & 0xFFFFFFFF
    return x


def serve_work(ctl, res):
    """For each ("work", n) on ctl: run cpu_work(n), answer (start, end)
    perf_counter() stamps; None ends."""
    while True:
        cmd = ctl.recv()
        if cmd is None:
            break
        t0 = perf()
        cpu_work(cmd[1])
        res.send((t0, perf()))


def serve_work_in_interpreter(ctl_id, res_id):
    serve_work(tpshare.Channel.from_id(ctl_id),
               tpshare.Channel.from_id(res_id))


def serve_work_in_process(ctl_conn, res_conn):
    try:
        serve_work(ctl_conn, res_conn)
    finally:
        ctl_conn.close()
        res_conn.close()


def pipeline_consumer(inbox, outbox, n):
    """The consumer of the same-code pipeline (bench.shm): one code for
    MemChannels between interpreters and between processes.  Says it is
    ready, takes n items in batches, copies each out (what a consumer
    keeps) and releases it, says it is done."""
    outbox.send(b"ready")
    got = 0
    total = 0
    while got < n:
        for mv in inbox.recv_many(256, timeout=60):
            total += len(bytes(mv))
            mv.release()
            got += 1
    outbox.send(b"done")
    return total
