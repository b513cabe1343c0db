/* shm_handle.c - tpshare._shm.Segment: making and opening the mapping,
 * errors and timeouts, the lock taken with the GIL released, and the
 * handle's methods other than send and receive (shm_chan.c).
 *
 * The handle owns one file descriptor of the segment's memfd and one
 * mapping of it.  Views, buffers and trackers hold the handle, so the
 * mapping stays until the last of them goes.  After fork() the child
 * has the same mapping and may use it: blocks are owned by pid, so the
 * child's copies of its parent's views never free the parent's blocks.
 */
#define _GNU_SOURCE
#include "shm_py.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The largest segment we map: larger sizes are a ValueError, and a
 * larger file made by another process is refused. */
#define MAX_TOTAL ((uint64_t)1 << 40)

shm_state *
tps_shm_state(PyObject *module)
{
    return (shm_state *)PyModule_GetState(module);
}

/* Set the exception for rc (a send or a receive turns
 * TPS_SHM_ETIMEOUT into full or empty itself).  Returns -1. */
int
tps_shm_raise(ShmChan *c, int rc, const char *what)
{
    shm_state *st = tps_shm_state(c->module);
    switch (rc) {
    case TPS_SHM_ECLOSED:
        PyErr_SetString(st->ChannelClosed, "the channel is closed");
        break;
    case TPS_SHM_ECORRUPT:
        PyErr_Format(st->CorruptSegmentError,
                     "%s: the shared segment breaks its invariants "
                     "(another process wrote it)", what);
        break;
    case TPS_SHM_ENOSPACE:
        PyErr_Format(st->ChannelFull, "%s: no room in the segment", what);
        break;
    case TPS_SHM_EFULL:
        PyErr_SetString(st->ChannelFull, "the channel is full");
        break;
    case TPS_SHM_EEMPTY:
        PyErr_SetString(st->ChannelEmpty, "the channel is empty");
        break;
    case TPS_SHM_ETIMEOUT:
        PyErr_Format(PyExc_TimeoutError, "%s: the segment's lock stayed "
                     "taken", what);
        break;
    default:
        PyErr_SetFromErrno(PyExc_OSError);
        break;
    }
    return -1;
}

/* None: -1 (no deadline); seconds: a CLOCK_MONOTONIC deadline.
 * Returns -1 with ValueError for a negative or NaN timeout. */
int
tps_shm_deadline(PyObject *timeout, int64_t *deadline)
{
    double t;
    if (timeout == NULL || timeout == Py_None) {
        *deadline = -1;
        return 0;
    }
    t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(t) || t < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "timeout must be None or a non-negative number");
        return -1;
    }
    if (t > 1e9) {
        *deadline = -1;
        return 0;
    }
    *deadline = tps_shm_now() + (int64_t)(t * 1e9);
    return 0;
}

/* Take the segment's lock; when it is busy, without the GIL.  A lock
 * held past the deadline (or 5 s after it, or forever without one)
 * gives TPS_SHM_ETIMEOUT. */
int
tps_shm_lock_py(ShmChan *c, int64_t deadline)
{
    int rc = tps_shm_lock(&c->map, 0);
    int64_t until = deadline;
    if (rc != TPS_SHM_ETIMEOUT) {
        return rc;
    }
    if (until >= 0) {
        int64_t floor = tps_shm_now() + 5000000000LL;
        until = until > floor ? until : floor;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = tps_shm_lock(&c->map, until);
    Py_END_ALLOW_THREADS
    return rc;
}

/* Segment(fd, token, create, maxsize=0, size=0, kind=1): on success the
 * handle owns fd; on failure the caller still does. */
static PyObject *
seg_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "token", "create", "maxsize", "size",
                             "kind", NULL};
    int fd, create;
    Py_buffer token = {0};
    Py_ssize_t maxsize = 0;
    unsigned long long size = 0;
    unsigned int kind = 1;
    uint64_t total = 0;
    struct stat sb;
    char *base = MAP_FAILED;
    ShmChan *c = NULL;
    PyObject *module;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*p|nKI:Segment", kwlist,
                                     &fd, &token, &create, &maxsize, &size,
                                     &kind)) {
        return NULL;
    }
    module = PyType_GetModuleByDef(type, &tps_shm_module);
    if (module == NULL) {
        goto error;
    }
    if (token.len != TPS_SHM_TOKEN) {
        PyErr_SetString(PyExc_ValueError, "the token is 16 bytes");
        goto error;
    }
    if (create) {
        if (maxsize < 0 || maxsize > (1 << 20)) {
            PyErr_SetString(PyExc_ValueError,
                            "maxsize must be 0 (unbounded) to 1048576");
            goto error;
        }
        if (size < 4096 || size > MAX_TOTAL / 2
                || tps_shm_layout_size(size, (uint32_t)maxsize, &total) < 0
                || total > MAX_TOTAL) {
            PyErr_SetString(PyExc_ValueError,
                            "size must be from 4096 bytes to 512 GiB");
            goto error;
        }
        /* Only this user may open it through /proc (a memfd is 0777). */
        if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)total) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
    }
    else {
        if (fstat(fd, &sb) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        total = (uint64_t)sb.st_size;
        if (total < sizeof(tps_shm_header) || total > MAX_TOTAL) {
            PyErr_SetString(tps_shm_state(module)->CorruptSegmentError,
                            "this is not a tpshare.shm segment");
            goto error;
        }
    }
    base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                0);
    if (base == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    c = (ShmChan *)type->tp_alloc(type, 0);
    if (c == NULL) {
        goto error;
    }
    rc = create ? tps_shm_init(&c->map, base, (size_t)total, (uint64_t)size,
                               (uint32_t)maxsize, kind, token.buf)
                : tps_shm_attach(&c->map, base, (size_t)total, token.buf);
    if (rc < 0) {
        PyErr_SetString(tps_shm_state(module)->CorruptSegmentError,
                        rc == TPS_SHM_ECORRUPT
                        ? "this is not a tpshare.shm segment, or not the "
                          "one named (its header does not check out)"
                        : "the segment could not be laid out");
        goto error;
    }
    memcpy(c->token, token.buf, TPS_SHM_TOKEN);
    c->fd = fd;
    c->pid = getpid();
    c->module = Py_NewRef(module);
    PyBuffer_Release(&token);
    return (PyObject *)c;
error:
    if (c != NULL) {
        c->map.base = NULL;
        c->fd = -1;
        Py_DECREF(c);
    }
    if (base != MAP_FAILED) {
        munmap(base, (size_t)total);
    }
    PyBuffer_Release(&token);
    return NULL;
}

static void
seg_dealloc(ShmChan *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    if (c->weakrefs != NULL) {
        PyObject_ClearWeakRefs((PyObject *)c);
    }
    if (c->map.base != NULL) {
        munmap(c->map.base, c->map.size);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    Py_CLEAR(c->module);
    tp->tp_free(c);
    Py_DECREF(tp);
}

/* buffer(nbytes, timeout=None) -> a writable buffer in the segment */
static PyObject *
seg_buffer(ShmChan *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"nbytes", "timeout", NULL};
    Py_ssize_t n;
    PyObject *timeout = Py_None, *res;
    int64_t deadline;
    uint32_t idx;
    uint64_t off;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|O:buffer", kwlist, &n,
                                     &timeout)
            || tps_shm_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "nbytes must be >= 0");
        return NULL;
    }
    if (tps_shm_alloc_wait(c, (uint64_t)n, TPS_SHM_WRITABLE, deadline,
                           &idx) < 0) {
        return NULL;
    }
    off = c->map.blocks[idx].off;
    if (off % TPS_SHM_GRANULE || off > c->map.heap_size
            || (uint64_t)n > c->map.heap_size - off) {
        tps_shm_release_block(c, idx, 0, TPS_SHM_OWNED);
        tps_shm_raise(c, TPS_SHM_ECORRUPT, "buffer");
        return NULL;
    }
    res = tps_shm_mem_new(c, tps_shm_state(c->module)->BufferType, idx,
                          c->map.blocks[idx].gen, off, (uint64_t)n, 0);
    if (res == NULL) {
        tps_shm_release_block(c, idx, 0, TPS_SHM_OWNED);
    }
    return res;
}

static PyObject *
seg_close(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    tps_shm_header *h = c->map.hdr;
    int rc = tps_shm_lock_py(c, -1);
    if (rc < 0) {
        return tps_shm_raise(c, rc, "close"), NULL;
    }
    __atomic_store_n(&h->closed, 1, __ATOMIC_RELEASE);
    tps_shm_unlock(&c->map);
    tps_shm_wake(&h->items_seq, &h->recv_waiters);
    tps_shm_wake(&h->space_seq, &h->send_waiters);
    Py_RETURN_NONE;
}

/* Items queued, read without the lock (a snapshot), within [0, nslots]. */
static uint64_t
seg_count(ShmChan *c)
{
    uint64_t head = __atomic_load_n(&c->map.hdr->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&c->map.hdr->tail, __ATOMIC_ACQUIRE);
    uint64_t q = tail - head;
    return q > c->map.nslots ? c->map.nslots : q;
}

static PyObject *
seg_qsize(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(seg_count(c));
}

static PyObject *
seg_empty(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(seg_count(c) == 0);
}

static PyObject *
seg_full(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(seg_count(c) >= c->map.nslots);
}

static Py_ssize_t
seg_len(ShmChan *c)
{
    return (Py_ssize_t)seg_count(c);
}

static PyObject *
seg_stats(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    tps_shm_header *h = c->map.hdr, snap;
    uint64_t q;
    int rc = tps_shm_lock_py(c, -1);
    if (rc < 0) {
        return tps_shm_raise(c, rc, "stats"), NULL;
    }
    memcpy(&snap.sent, &h->sent, 5 * sizeof(uint64_t));
    snap.used_granules = h->used_granules;
    q = tps_shm_queued(&c->map);
    tps_shm_unlock(&c->map);
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsK}", "sent", snap.sent, "received",
        snap.received, "dropped", snap.dropped, "queued",
        (unsigned long long)(q == UINT64_MAX ? 0 : q), "sends_parked",
        __atomic_load_n(&h->sends_parked, __ATOMIC_RELAXED), "recvs_parked",
        __atomic_load_n(&h->recvs_parked, __ATOMIC_RELAXED), "reclaimed",
        snap.reclaimed, "repairs", snap.repairs, "used_bytes",
        (unsigned long long)(snap.used_granules * TPS_SHM_GRANULE),
        "heap_bytes", (unsigned long long)c->map.heap_size);
}

/* reclaim() -> how many blocks of dead processes were freed. */
static PyObject *
seg_reclaim(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    int n, rc = tps_shm_lock_py(c, -1);
    if (rc < 0) {
        return tps_shm_raise(c, rc, "reclaim"), NULL;
    }
    n = tps_shm_reclaim(&c->map);
    tps_shm_unlock(&c->map);
    return PyLong_FromLong(n);
}

/* _die_in_lock(torn) -> None: take the lock and keep it, for a test
 * that then kills this process; torn=True first leaves a push half done
 * (a queued block no slot refers to). */
static PyObject *
seg_die_in_lock(ShmChan *c, PyObject *torn)
{
    uint32_t idx;
    int rc = tps_shm_lock_py(c, -1);
    if (rc < 0) {
        return tps_shm_raise(c, rc, "_die_in_lock"), NULL;
    }
    if (PyObject_IsTrue(torn)
            && tps_shm_alloc(&c->map, 1000, 0, &idx) == TPS_SHM_OK) {
        c->map.blocks[idx].state = TPS_SHM_QUEUED;
    }
    Py_RETURN_NONE;
}

/* _layout() -> where things are, for tests that write the segment. */
static PyObject *
seg_layout(ShmChan *c, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{snsnsnsnsnsIsIsnsnsnsnsnsn}",
        "slots_off", (Py_ssize_t)((char *)c->map.slots - c->map.base),
        "blocks_off", (Py_ssize_t)((char *)c->map.blocks - c->map.base),
        "bitmap_off", (Py_ssize_t)((char *)c->map.bitmap - c->map.base),
        "heap_off", (Py_ssize_t)(c->map.heap - c->map.base),
        "total", (Py_ssize_t)c->map.size,
        "nslots", c->map.nslots, "nblocks", c->map.nblocks,
        "slot_size", (Py_ssize_t)sizeof(tps_shm_slot),
        "block_size", (Py_ssize_t)sizeof(tps_shm_block),
        "head_off", (Py_ssize_t)offsetof(tps_shm_header, head),
        "tail_off", (Py_ssize_t)offsetof(tps_shm_header, tail),
        "lock_off", (Py_ssize_t)offsetof(tps_shm_header, lock),
        "inline", (Py_ssize_t)TPS_SHM_INLINE);
}

static PyObject *
seg_get_closed(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(__atomic_load_n(&c->map.hdr->closed,
                                           __ATOMIC_ACQUIRE) != 0);
}

static PyObject *
seg_get_maxsize(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(c->map.maxsize);
}

static PyObject *
seg_get_capacity(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(c->map.nslots);
}

static PyObject *
seg_get_fd(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(c->fd);
}

static PyObject *
seg_get_token(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyBytes_FromStringAndSize((const char *)c->token, TPS_SHM_TOKEN);
}

static PyObject *
seg_get_kind(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(c->map.kind);
}

static PyObject *
seg_get_size(ShmChan *c, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(c->map.heap_size);
}

static PyMethodDef seg_methods[] = {
    {"send", (PyCFunction)(void (*)(void))tps_shm_send,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"send_many", (PyCFunction)(void (*)(void))tps_shm_send_many,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"recv", (PyCFunction)(void (*)(void))tps_shm_recv,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_recv", (PyCFunction)(void (*)(void))tps_shm_recv_tagged,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"recv_many", (PyCFunction)(void (*)(void))tps_shm_recv_many,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_recv_values", (PyCFunction)(void (*)(void))tps_shm_recv_values,
     METH_FASTCALL, NULL},
    {"buffer", (PyCFunction)(void (*)(void))seg_buffer,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"close", (PyCFunction)seg_close, METH_NOARGS, NULL},
    {"qsize", (PyCFunction)seg_qsize, METH_NOARGS, NULL},
    {"empty", (PyCFunction)seg_empty, METH_NOARGS, NULL},
    {"full", (PyCFunction)seg_full, METH_NOARGS, NULL},
    {"stats", (PyCFunction)seg_stats, METH_NOARGS, NULL},
    {"reclaim", (PyCFunction)seg_reclaim, METH_NOARGS, NULL},
    {"_loads", (PyCFunction)tps_shm_loads, METH_O, NULL},
    {"_layout", (PyCFunction)seg_layout, METH_NOARGS, NULL},
    {"_die_in_lock", (PyCFunction)seg_die_in_lock, METH_O, NULL},
    {NULL},
};

static PyGetSetDef seg_getset[] = {
    {"closed", (getter)seg_get_closed, NULL, NULL, NULL},
    {"maxsize", (getter)seg_get_maxsize, NULL, NULL, NULL},
    {"capacity", (getter)seg_get_capacity, NULL, NULL, NULL},
    {"fd", (getter)seg_get_fd, NULL, NULL, NULL},
    {"token", (getter)seg_get_token, NULL, NULL, NULL},
    {"kind", (getter)seg_get_kind, NULL, NULL, NULL},
    {"size", (getter)seg_get_size, NULL, NULL, NULL},
    {NULL},
};

static PyMemberDef seg_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(ShmChan, weakrefs),
     Py_READONLY},
    {NULL},
};

static PyType_Slot seg_slots[] = {
    {Py_tp_new, seg_new},
    {Py_tp_dealloc, seg_dealloc},
    {Py_tp_methods, seg_methods},
    {Py_tp_getset, seg_getset},
    {Py_tp_members, seg_members},
    {Py_sq_length, seg_len},
    {Py_tp_doc, "A handle on a channel in a shared memory segment (use "
                "tpshare.shm.MemChannel or Channel)."},
    {0, NULL},
};

PyType_Spec tps_shm_seg_spec = {
    .name = "tpshare._shm.Segment",
    .basicsize = sizeof(ShmChan),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = seg_slots,
};
