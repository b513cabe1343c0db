"""Channels between processes over shared memory.

``tpshare.shm.MemChannel`` and ``tpshare.shm.Channel`` have the API of
their in-process namesakes, but live in a shared memory segment (a memfd)
that any process may map: pass one to ``multiprocessing.Process(args=...)``
under any start method, through a multiprocessing queue, or by its
``name`` to ``MemChannel.open(name)`` in an unrelated process of the same
user.  ``ch.buffer(nbytes)`` is writable memory inside the segment that a
send passes without a copy.  See docs/shm.md.
"""
import marshal
import os
import pickle as _pickle
import re
import stat

from . import _tpshare
from ._shm import (GRANULE, INLINE, Buffer, CorruptSegmentError, Segment,
                   Tracker, View)

__all__ = ["MemChannel", "Channel", "Buffer", "View", "Tracker",
           "CorruptSegmentError", "DEFAULT_SIZE"]

#: Bytes of payload space in a segment made without ``size=``.  A memfd
#: takes memory only for the pages written, so a large default costs
#: little until used.
DEFAULT_SIZE = 64 << 20

_NAME = re.compile(r"tps-([0-9]{1,10})-([0-9]{1,10})-([0-9a-f]{32})\Z")
_KIND_MEM = 1
_KIND_OBJ = 2
# What a shm.Channel item's payload is (the slot's tag).
_TAG_BUFFER = 0
_TAG_VALUE = 1
_TAG_PICKLE = 2
_TAG_REGISTERED = 3  # a type registered from C, TPSHARE_SELF_CONTAINED

_VALUE_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
_MAX_DEPTH = 200


def _create(cls, maxsize, size, kind):
    if not isinstance(maxsize, int) or isinstance(maxsize, bool):
        raise TypeError("maxsize must be an int")
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError("size must be an int")
    fd = os.memfd_create("tpshare.shm", os.MFD_CLOEXEC)
    try:
        return Segment.__new__(cls, fd, os.urandom(16), True, maxsize,
                               size, kind)
    except BaseException:
        os.close(fd)
        raise


def _open(cls, name, kind):
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"not the name of a tpshare.shm channel: {name!r}")
    pid, fd, token = int(match[1]), int(match[2]), bytes.fromhex(match[3])
    path = f"/proc/{pid}/fd/{fd}"
    try:
        # Only a regular file (a memfd is one) is opened: never a FIFO
        # or a device that another process's descriptor might name.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise CorruptSegmentError(f"{name!r} names no segment")
        f = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no channel {name!r}: process {pid} has ended or closed its "
            "handle (open the name of a live holder)") from None
    try:
        seg = Segment.__new__(cls, f, token, False)
    except BaseException:
        os.close(f)
        raise
    if seg.kind != kind:
        want = "MemChannel" if kind == _KIND_MEM else "Channel"
        raise TypeError(f"{name!r} is not a tpshare.shm.{want}")
    return seg


def _rebuild(cls, name, *extra):
    return cls.open(name, *extra)


class MemChannel(Segment):
    """Moves memory between processes: any buffer exporter in, a
    ``memoryview`` out.  ``buffer(nbytes)`` gives segment memory that a
    send passes without a copy; anything else is copied once."""

    __slots__ = ()

    def __new__(cls, maxsize=0, *, size=DEFAULT_SIZE):
        return _create(cls, maxsize, size, _KIND_MEM)

    @classmethod
    def open(cls, name):
        """A new handle on the channel named ``name`` (``ch.name`` in a
        live process holding it)."""
        return _open(cls, name, _KIND_MEM)

    @classmethod
    def from_id(cls, id):
        """open(), under the in-process channels' name (``id`` is the
        name)."""
        return cls.open(id)

    @property
    def name(self):
        """The name another process opens: valid while this process
        holds this handle."""
        return f"tps-{os.getpid()}-{self.fd}-{self.token.hex()}"

    @property
    def id(self):
        return self.name

    def __reduce__(self):
        return (_rebuild, (type(self), self.name))

    def __repr__(self):
        return (f"<tpshare.shm.{type(self).__name__} {self.name} "
                f"queued={self.qsize()}{' closed' if self.closed else ''}>")


def _check_value(obj, depth=0):
    """Whether obj is made only of the values Channel carries as such."""
    t = type(obj)
    if t in _VALUE_TYPES:
        return True
    if t is tuple and depth < _MAX_DEPTH:
        return all(_check_value(item, depth + 1) for item in obj)
    return False


def _offending(obj, depth=0):
    if type(obj) is tuple and depth < _MAX_DEPTH:
        for item in obj:
            bad = _offending(item, depth + 1)
            if bad is not None:
                return bad
        return None
    return None if type(obj) in _VALUE_TYPES else type(obj)


def _rebuild_registered(ch, mv):
    """The object another process sent as (name, inline, size, aux,
    payload): each field checked (Segment._loads accepts only the value
    kinds a Channel sends, reads a private copy and makes private
    objects), then rebuilt by this interpreter's registration of that
    name."""
    parts = ch._loads(mv)
    if (type(parts) is not tuple or len(parts) != 5
            or type(parts[0]) is not str or type(parts[1]) is not bytes
            or type(parts[2]) is not int or type(parts[3]) is not int
            or (parts[4] is not None and type(parts[4]) is not bytes)
            or len(parts[1]) != 16 or not 0 <= parts[3] < 1 << 32
            or not -(1 << 63) <= parts[2] < 1 << 63
            or (parts[4] is not None and len(parts[4]) != parts[2])):
        raise CorruptSegmentError(
            "a registered type's data in the segment is malformed")
    return _tpshare._crossproc_rebuild(*parts)


def _is_buffer(obj):
    if type(obj) is bytes:
        return False
    try:
        memoryview(obj).release()
    except TypeError:
        return False
    return True


class Channel(MemChannel):
    """Carries values between processes: None, bool, int, float,
    complex, str, bytes and tuples of them as values; segment buffers
    and other buffer exporters as memory (as MemChannel does); anything
    else with ``pickle=True`` (on both ends), or NotShareableError."""

    # _pending: what recv_many() took but did not return (an item that
    # failed to decode left an exception and the items behind it).
    __slots__ = ("_pickle", "_pending")

    def __new__(cls, maxsize=0, *, size=DEFAULT_SIZE, pickle=False):
        self = _create(cls, maxsize, size, _KIND_OBJ)
        self._pickle = bool(pickle)
        return self

    @classmethod
    def open(cls, name, pickle=False):
        self = _open(cls, name, _KIND_OBJ)
        self._pickle = bool(pickle)
        return self

    @property
    def pickle(self):
        return self._pickle

    def __reduce__(self):
        return (_rebuild, (type(self), self.name, self._pickle))

    def _encode(self, obj):
        if _check_value(obj):
            return marshal.dumps(obj), _TAG_VALUE
        if isinstance(obj, Buffer) or _is_buffer(obj):
            return obj, _TAG_BUFFER
        if type(obj) is not tuple:
            try:
                # (name, inline, size, aux, payload); None for a type with
                # no registration; NotShareableError for a registered type
                # whose data cannot cross processes.
                parts = _tpshare._crossproc_share(obj)
            except _tpshare.NotShareableError:
                if not self._pickle:
                    raise
            else:
                if parts is not None:
                    return marshal.dumps(parts), _TAG_REGISTERED
        if self._pickle:
            return _pickle.dumps(obj, protocol=5), _TAG_PICKLE
        bad = _offending(obj) or type(obj)
        raise _tpshare.NotShareableError(
            f"{bad.__module__}.{bad.__qualname__} objects cannot cross a "
            "tpshare.shm.Channel (open it with pickle=True to pickle them)")

    def _decode(self, tag, mv):
        if tag == _TAG_BUFFER:
            return mv
        try:
            if tag == _TAG_VALUE:
                # Never marshal.loads() on segment data: a hostile peer
                # could write a code object (or any marshal type) there.
                return self._loads(mv)
            if tag == _TAG_REGISTERED:
                return _rebuild_registered(self, mv)
            if tag == _TAG_PICKLE:
                if not self._pickle:
                    raise ValueError(
                        "a pickled item came, but this handle was not "
                        "opened with pickle=True (it is dropped)")
                return _pickle.loads(mv)
            raise CorruptSegmentError(f"unknown item tag {tag}")
        finally:
            mv.release()

    def send(self, obj, *, timeout=None, writable=False):
        payload, tag = self._encode(obj)
        return Segment.send(self, payload, timeout=timeout,
                            writable=writable, tag=tag)

    def send_many(self, items, *, timeout=None, writable=False):
        # Small values are marshalled in C; _encode() makes the rest.
        return Segment.send_many(self, items, timeout=timeout,
                                 writable=writable, encode=self._encode)

    def _take_pending(self, max):
        """Up to max items kept by an earlier recv_many(), or raise the
        exception kept first."""
        pending = getattr(self, "_pending", None)
        if not pending:
            return None
        if isinstance(pending[0], BaseException):
            raise pending.pop(0)
        got = pending[:max]
        del pending[:max]
        return got

    def recv(self, timeout=None):
        got = self._take_pending(1)
        tag, mv = got[0] if got else self._recv(timeout)
        return self._decode(tag, mv)

    def recv_many(self, max, timeout=None):
        """As in-process: when item k fails to decode, it is consumed; if
        k > 0 the k items before it are returned and the exception is
        kept for the next recv() or recv_many() of this handle, else it
        is raised at once.  The items behind it stay with this handle and
        come next (in-process, they go back to the channel)."""
        got = self._take_pending(max)
        if got is None:
            # Small values are decoded in C; _decode() does the rest.
            out, exc, rest = self._recv_values(max, timeout, self._decode)
            if exc is not None:
                self._pending = (([exc] if out else []) + rest
                                 + (getattr(self, "_pending", None) or []))
                if not out:
                    raise exc
            return out
        out = []
        for i, (tag, mv) in enumerate(got):
            try:
                out.append(self._decode(tag, mv))
            except BaseException as exc:
                kept = ([exc] if out else []) + list(got[i + 1:])
                self._pending = kept + (getattr(self, "_pending", None)
                                        or [])
                if not out:
                    raise
                return out
        return out
