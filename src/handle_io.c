/* handle_io.c - the send and receive methods of the channel handles:
 * send, send_many, recv and recv_many of Channel and MemChannel, and the
 * put/get API of PEP 734's Queue on the same channel.  They check their
 * arguments (args.c, unbound.c) and leave the objects to the object
 * layer (objlayer.c); the method tables are in channel.c.
 */
#include "channel.h"
#include "item.h"

/* send() with arguments other than the object alone: parsed. */
static Py_NO_INLINE PyObject *
chan_send_parsed(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", NULL};
    static const char *const kwlist[] = {"timeout", "writable",
                                         "unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[3] = {NULL, NULL, NULL};
    int64_t timeout;
    int writable = 0;
    unsigned int unbound;

    if (tps_parse_args("send", args, nargs, kwnames, 1, 1, posnames, pos,
                       kwlist, kw) < 0
        || tps_parse_timeout(kw[0], &timeout) < 0
        || tps_parse_unbound(tps_handle_state(self), kw[2], 0, &unbound) < 0)
    {
        return NULL;
    }
    if (kw[1] != NULL) {
        if (tps_handle_kind(self, tps_handle_state(self)) != TPS_KIND_MEM) {
            PyErr_SetString(PyExc_TypeError,
                            "writable= is a MemChannel option");
            return NULL;
        }
        if ((writable = PyObject_IsTrue(kw[1])) < 0) {
            return NULL;
        }
    }
    return tps_obj_send(self, pos[0], timeout, writable, unbound);
}

PyObject *
tps_chan_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    if (nargs == 1 && kwnames == NULL) {
        /* send(obj), the common call: no timeout, the channel's policy
         * (what the parse gives for it, without its calls; out of line,
         * so that this call does not set up the parse's frame). */
        return tps_obj_send(self, args[0], -1, 0, 0);
    }
    return chan_send_parsed(self, args, nargs, kwnames);
}

PyObject *
tps_chan_send_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    static const char *const posnames[] = {"items", NULL};
    static const char *const kwlist[] = {"timeout", "unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[2] = {NULL, NULL};
    tps_module_state *state = tps_handle_state(self);
    tps_kind k = tps_handle_kind(self, state);
    TpShare_Record **recs = NULL;
    PyObject *seq = NULL;
    Py_ssize_t n = 0, made = 0;
    int64_t timeout;
    unsigned int unbound;

    if (tps_parse_args("send_many", args, nargs, kwnames, 1, 1, posnames,
                       pos, kwlist, kw) < 0
        || tps_parse_timeout(kw[0], &timeout) < 0
        || tps_parse_unbound(state, kw[1], 0, &unbound) < 0)
    {
        return NULL;
    }
    tps_interp *st = tps_enter();
    if (st == NULL) {
        return NULL;
    }
    seq = PySequence_Fast(pos[0], "send_many() needs an iterable");
    if (seq == NULL) {
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    recs = PyMem_RawMalloc((size_t)n * sizeof(TpShare_Record *));
    if (recs == NULL) {
        PyErr_NoMemory();
        goto finally;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int imm = tps_obj_immediates(self, k);
    for (made = 0; made < n; made++) {
        /* An immediate item when it can be (neutral: no policy). */
        TpShare_Record *it = imm ? tps_imm_make(items[made]) : NULL;
        if (it == NULL) {
            it = tps_obj_record(self, k, state, items[made], 0,
                                tps_interp_id(st));
            if (it == NULL) {
                goto finally;
            }
            it->flags |= unbound << TPS_REC_UNBOUND_SHIFT;
        }
        recs[made] = it;
    }
    int rc = tps_channel_send(((tps_handle *)self)->ch, recs, n, timeout);
    if (rc < 0) {
        tps_handle_raise(self, state, rc);
        goto finally;
    }
    made = 0;   /* the channel owns them now */

finally:
    for (Py_ssize_t i = 0; i < made; i++) {
        tps_item_release(recs[i]);
    }
    PyMem_RawFree(recs);
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* recv() with a timeout: parsed. */
static Py_NO_INLINE PyObject *
chan_recv_parsed(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const posnames[] = {"timeout", NULL};
    PyObject *pos[1] = {NULL};
    int64_t timeout;

    if (tps_parse_args("recv", args, nargs, kwnames, 0, 1, posnames, pos,
                       NULL, NULL) < 0
        || tps_parse_timeout(pos[0], &timeout) < 0)
    {
        return NULL;
    }
    return tps_obj_recv(self, timeout);
}

PyObject *
tps_chan_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    if (nargs == 0 && kwnames == NULL) {
        return tps_obj_recv(self, -1);   /* recv(): waits forever */
    }
    return chan_recv_parsed(self, args, nargs, kwnames);
}

/* The bytes one recv_many() call copies, at most (past the first item):
 * the copies of a batch of large items, alive together in the list it
 * returns, are new memory that misses the cache, and that malloc gives
 * back to the system once the list goes (its trim threshold starts at
 * 128 KiB), so that the next batch faults it in again; one item at a
 * time reuses the same warm block.  Past this the call returns what it
 * has rebuilt and puts the rest back (docs/design.md, "Performance
 * decisions"). */
#define RECV_MANY_COPY_MAX ((Py_ssize_t)256 << 10)

/* The bytes rebuilt into `obj` (borrowed) as a copy, for the types that
 * can be large copies: bytes, str, bytearray; 0 for the others. */
static Py_ssize_t
recv_many_copied(PyObject *obj)
{
    if (PyBytes_CheckExact(obj)) {
        return PyBytes_GET_SIZE(obj);
    }
    if (PyUnicode_CheckExact(obj)) {
        return PyUnicode_GET_LENGTH(obj) * PyUnicode_KIND(obj);
    }
    if (PyByteArray_CheckExact(obj)) {
        return PyByteArray_GET_SIZE(obj);
    }
    return 0;
}

/* Start fetching what rebuilding item `it` reads first: its record, or
 * its compact block (an immediate int or constant has nothing). */
static inline void
prefetch_item(TpShare_Record *it)
{
    if (!tps_item_is_imm(it)) {
        tps_prefetch(it, sizeof(TpShare_Record));
        return;
    }
    tps_compact *c = tps_item_compact(it);
    if (c != NULL) {
        tps_prefetch(c, sizeof(tps_compact) + 1);
    }
}

PyObject *
tps_chan_recv_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    static const char *const posnames[] = {"max", "timeout", NULL};
    PyObject *pos[2] = {NULL, NULL};
    tps_module_state *state = tps_handle_state(self);
    tps_kind k = tps_handle_kind(self, state);
    TpShare_Record **recs = NULL;
    PyObject *res = NULL;
    Py_ssize_t got = 0, i = 0, copied = 0;
    int64_t timeout;

    if (tps_parse_args("recv_many", args, nargs, kwnames, 1, 2, posnames,
                       pos, NULL, NULL) < 0
        || tps_parse_timeout(pos[1], &timeout) < 0)
    {
        return NULL;
    }
    Py_ssize_t max = PyLong_AsSsize_t(pos[0]);
    if (max == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max must be >= 1");
        return NULL;
    }
    tps_interp *st = tps_enter();
    if (st == NULL || tps_handle_raise_pending(self) < 0) {
        return NULL;
    }
    if (max > 1 << 16) {
        max = 1 << 16;
    }
    /* Items as large as the last ones take fewer than max. */
    Py_ssize_t hint = ((tps_handle *)self)->many_hint;
    if (hint > 0 && max > hint) {
        max = hint;
    }
    recs = PyMem_RawMalloc((size_t)max * sizeof(TpShare_Record *));
    if (recs == NULL) {
        return PyErr_NoMemory();
    }
    tps_channel *ch = ((tps_handle *)self)->ch;
    int rc = tps_channel_recv(ch, recs, max, &got, timeout);
    if (rc < 0) {
        tps_handle_raise(self, state, rc);
        goto finally;
    }
    assert(got >= 1 && got <= max);
    res = PyList_New(got);
    if (res == NULL) {
        goto finally;   /* nothing rebuilt: every record goes back */
    }
    /* Records and their payloads were written by the sending thread:
     * fetch two records ahead, and the payload of the next one (its
     * record's lines were fetched an iteration ago). */
    for (i = 0; i < got && i < 2; i++) {
        prefetch_item(recs[i]);
    }
    for (i = 0; i < got; i++) {
        if (i + 2 < got) {
            prefetch_item(recs[i + 2]);
        }
        if (i + 1 < got && !tps_item_is_imm(recs[i + 1])
            && recs[i + 1]->data.ptr != NULL)
        {
            tps_prefetch(recs[i + 1]->data.ptr, 1);
        }
        PyObject *obj = tps_item_is_imm(recs[i]) ? tps_imm_rebuild(recs[i])
                        : tps_obj_rebuild(k, state, recs[i]);
        if (obj == NULL) {
            break;
        }
        PyList_SET_ITEM(res, i, obj);
        if (tps_item_is_bound(recs[i])) {
            /* Large copies are made here only out of a sender's object
             * (smaller ones were made at send). */
            copied += recv_many_copied(obj);
        }
        tps_item_queue_release(recs[i]);
        if (copied >= RECV_MANY_COPY_MAX) {
            /* The next call takes no more than this one returns; the rest
             * go back to the head of the channel (below). */
            i++;
            ((tps_handle *)self)->many_hint = i;
            Py_SET_SIZE(res, i);
            goto finally;
        }
    }
    if (i == got && hint > 0 && got == max) {
        /* The items are smaller now: take more next time. */
        ((tps_handle *)self)->many_hint = hint < (1 << 15) ? 2 * hint : 0;
    }
    if (i < got) {
        /* Item i failed to rebuild (its own error, or one that came while
         * it did, such as KeyboardInterrupt): it is consumed, as by recv().
         * The items rebuilt before it are returned and its exception is
         * raised by the next receive on this handle; at once when there
         * are none.  The items behind it were not rebuilt: they go back
         * to the head of the channel (below). */
        assert(PyErr_Occurred());
        tps_item_queue_release(recs[i]);
        if (i > 0) {
            tps_handle *c = (tps_handle *)self;
            PyObject *exc = PyErr_GetRaisedException();
            if (c->pending != NULL) {
                /* Left by a receive on this handle from inside one of the
                 * rebuilds: the earlier error, shown as the context. */
                PyException_SetContext(exc, c->pending);   /* steals */
            }
            c->pending = exc;
            Py_SET_SIZE(res, i);
        }
        else {
            Py_CLEAR(res);
        }
        i++;
    }

finally:
    if (i < got && tps_channel_unrecv(ch, recs + i, got - i) < 0) {
        /* Out of memory to grow the ring: they cannot be kept. */
        for (Py_ssize_t j = i; j < got; j++) {
            tps_item_queue_release(recs[j]);
        }
    }
    PyMem_RawFree(recs);
    return res;
}

/* ---------------------------------------------------------------------
 * Queue methods: PEP 734's concurrent.interpreters.Queue API.
 */

/* block/timeout as PEP 734 reads them: not blocking means no wait;
 * a negative timeout is a ValueError.  A float block is a TypeError: it
 * is a timeout passed where queue.Queue-style code puts block (3.13's
 * put(obj, timeout) order), and taken as "block" it would wait forever. */
static int
queue_timeout(PyObject *block, PyObject *timeout, int64_t *ns)
{
    if (block != NULL && PyFloat_Check(block)) {
        PyErr_Format(PyExc_TypeError,
                     "block must be a bool, not float (%R); pass the "
                     "timeout by keyword: timeout=%R", block, block);
        return -1;
    }
    int b = block == NULL ? 1 : PyObject_IsTrue(block);
    if (b < 0) {
        return -1;
    }
    if (tps_parse_timeout(timeout, ns) < 0) {
        return -1;
    }
    if (!b) {
        *ns = 0;
    }
    return 0;
}

PyObject *
tps_queue_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", "block", "timeout", NULL};
    static const char *const kwlist[] = {"unbounditems", NULL};
    PyObject *pos[3] = {NULL, NULL, NULL}, *kw[1] = {NULL};
    int64_t timeout;
    unsigned int unbound;
    if (nargs == 1 && kwnames == NULL) {
        /* put(obj): blocking, no timeout, the queue's policy. */
        return tps_obj_send(self, args[0], -1, 0, 0);
    }
    if (tps_parse_args("put", args, nargs, kwnames, 1, 3, posnames, pos,
                       kwlist, kw) < 0
        || queue_timeout(pos[1], pos[2], &timeout) < 0
        || tps_parse_unbound(tps_handle_state(self), kw[0], 0, &unbound) < 0)
    {
        return NULL;
    }
    return tps_obj_send(self, pos[0], timeout, 0, unbound);
}

PyObject *
tps_queue_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const posnames[] = {"block", "timeout", NULL};
    PyObject *pos[2] = {NULL, NULL};
    int64_t timeout;
    if (nargs == 0 && kwnames == NULL) {
        return tps_obj_recv(self, -1);   /* get(): blocking, no timeout */
    }
    if (tps_parse_args("get", args, nargs, kwnames, 0, 2, posnames, pos,
                       NULL, NULL) < 0
        || queue_timeout(pos[0], pos[1], &timeout) < 0)
    {
        return NULL;
    }
    return tps_obj_recv(self, timeout);
}

PyObject *
tps_queue_put_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", NULL};
    static const char *const kwlist[] = {"unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[1] = {NULL};
    unsigned int unbound;
    if (tps_parse_args("put_nowait", args, nargs, kwnames, 1, 1, posnames,
                       pos, kwlist, kw) < 0
        || tps_parse_unbound(tps_handle_state(self), kw[0], 0, &unbound) < 0)
    {
        return NULL;
    }
    return tps_obj_send(self, pos[0], 0, 0, unbound);
}

PyObject *
tps_queue_get_nowait(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return tps_obj_recv(self, 0);
}
