"""Child-process bodies for tests/test_shm.py: top-level functions, so
that every multiprocessing start method can run them."""

import os
import time

import tpshare
from tpshare import shm


def echo(req, resp, n):
    """Receive n items and send back each as bytes reversed; a segment
    buffer of the reply when it is large."""
    for _ in range(n):
        mv = req.recv(timeout=30)
        data = bytes(mv)[::-1]
        mv.release()
        if len(data) > shm.INLINE:
            buf = resp.buffer(len(data))
            memoryview(buf)[:] = data
            resp.send(buf, timeout=30)
        else:
            resp.send(data, timeout=30)


def scribble(req, resp):
    """Write b"child" over the start of a writable view, then report."""
    mv = req.recv(timeout=30)
    mv[:5] = b"child"
    resp.send(b"done %d" % os.getpid(), timeout=30)
    # Hold the view until told to end, so the parent sees it held.
    req.recv(timeout=30)
    mv.release()


def values(ch, out):
    """Send back every value received, until None."""
    while True:
        v = ch.recv(timeout=30)
        out.send(v, timeout=30)
        if v is None:
            return


def from_queue(q, n):
    """Take a channel from a multiprocessing queue and send n items."""
    ch = q.get(timeout=30)
    for i in range(n):
        ch.send(b"%d" % i, timeout=30)


def hammer(ch, seed, ready):
    """Send and receive as fast as possible, holding views and buffers,
    until killed."""
    import random
    rnd = random.Random(seed)
    held = []
    ready.send(b"go")
    while True:
        op = rnd.random()
        try:
            if op < 0.35:
                n = rnd.choice((8, 200, 5000, 70000))
                ch.send(bytearray(n), timeout=0)
            elif op < 0.55:
                buf = ch.buffer(rnd.choice((1, 300, 9000)), timeout=0)
                if rnd.random() < 0.7:
                    ch.send(buf, timeout=0)
                else:
                    held.append(buf)
            else:
                held.extend(ch.recv_many(rnd.randint(1, 8), timeout=0))
        except (tpshare.ChannelEmpty, tpshare.ChannelFull):
            pass
        if len(held) > 20:
            del held[:rnd.randint(0, 20)]


def sleeper(ch, ready):
    """Hold a received view and a buffer, then wait to be killed."""
    mv = ch.recv(timeout=30)
    buf = ch.buffer(4096)
    ready.send(b"held %d" % len(mv))
    time.sleep(60)
    del mv, buf


def die_in_lock(ch, torn, ready):
    """Take the segment's lock (leaving a push half done when torn) and
    wait to be killed holding it."""
    ch._die_in_lock(torn)
    ready.send(b"locked")
    time.sleep(60)


def registered_echo(ch, out):
    """values() in a process that registered the test extension's types:
    what it receives is rebuilt by its own registration."""
    import tpshare_testext  # noqa: F401 - registers Chunk
    values(ch, out)


def batches(ch, ready):
    """Send batches of ten items (nine ints, then a 300-byte bytes that
    takes a block) until killed: item i of batch k is k * 10 + i."""
    ready.send(b"go")
    k = 0
    while True:
        ch.send_many([k * 10 + i for i in range(9)] + [bytes(300)],
                     timeout=30)
        k += 1
