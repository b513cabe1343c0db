/* shm_chan.c - sending and receiving on a tpshare._shm.Segment handle
 * (tpshare.shm.MemChannel and Channel are its subclasses).
 *
 * A send copies a buffer into the slot (small) or into a heap block, or
 * passes a block made by buffer() as it is; a receive takes the slot
 * and, for a block, returns a view of the segment that frees the block
 * when the last memoryview of it goes.  Waits spin briefly, then sleep
 * on a futex word of the header, in slices of at most 100 ms so that a
 * lost wake-up (a peer killed between its change and its wake) costs a
 * slice, never a hang.
 */
#define _GNU_SOURCE
#include "shm_py.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLICE_NS 100000000
/* Pause instructions before sleeping: a few, since spinning on a busy
 * machine takes the CPU from the peer that would end the wait. */
#define SPIN 64
#define COPY_NOGIL 65536

static void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Called with the lock held; returns without it.  Sleeps until *word
 * moves, a slice passes or a signal comes.  Returns 0 (look again),
 * TPS_SHM_ETIMEOUT (the deadline passed) or TPS_SHM_PYERR. */
static int
park(ShmChan *c, uint32_t *word, uint32_t *waiters, uint64_t *parked,
     int64_t deadline)
{
    uint32_t seen = __atomic_load_n(word, __ATOMIC_SEQ_CST);
    int64_t now, until;
    int i;

    __atomic_store_n(waiters, 1, __ATOMIC_SEQ_CST);
    tps_shm_unlock(&c->map);
    now = tps_shm_now();
    if (deadline >= 0 && now >= deadline) {
        return TPS_SHM_ETIMEOUT;
    }
    until = now + SLICE_NS;
    if (deadline >= 0 && deadline < until) {
        until = deadline;
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < SPIN && __atomic_load_n(word, __ATOMIC_SEQ_CST) == seen;
            i++) {
        cpu_relax();
    }
    if (i == SPIN) {
        __atomic_fetch_add(parked, 1, __ATOMIC_RELAXED);
        /* Whatever ended the sleep, the caller looks again. */
        (void)tps_shm_wait(word, seen, until);
    }
    Py_END_ALLOW_THREADS
    /* Not only after EINTR: a signal that came while this thread was
     * not in the system call ends no sleep, only a slice. */
    if (PyErr_CheckSignals() < 0) {
        return TPS_SHM_PYERR;
    }
    return 0;
}

/* One item made ready to queue: its slot and, for buffer(), its owner. */
typedef struct {
    tps_shm_slot slot;
    ShmMem *sb;         /* borrowed: a buffer of this segment, or NULL */
    int copied;         /* slot.block is a copy this call allocated */
} prep_t;

static void
unprep(ShmChan *c, prep_t *p)
{
    if (p->copied) {
        tps_shm_release_block(c, p->slot.block, 0, TPS_SHM_OWNED);
        p->copied = 0;
    }
}

/* A block of len bytes for a copy, waiting for room until deadline. */
int
tps_shm_alloc_wait(ShmChan *c, uint64_t len, uint32_t flags, int64_t deadline,
           uint32_t *idx)
{
    tps_shm_header *h = c->map.hdr;
    shm_state *st = tps_shm_state(c->module);
    int rc;
    if (len > c->map.heap_size) {
        PyErr_Format(PyExc_ValueError, "%llu bytes do not fit in the "
                     "segment's %llu", (unsigned long long)len,
                     (unsigned long long)c->map.heap_size);
        return -1;
    }
    for (;;) {
        rc = tps_shm_lock_py(c, deadline);
        if (rc == TPS_SHM_OK) {
            rc = h->closed ? TPS_SHM_ECLOSED
                           : tps_shm_alloc(&c->map, len, flags, idx);
            if (rc == TPS_SHM_ENOSPACE) {
                rc = park(c, &h->space_seq, &h->send_waiters,
                          &h->sends_parked, deadline);
                if (rc == 0) {
                    continue;
                }
            }
            else {
                tps_shm_unlock(&c->map);
            }
        }
        if (rc == TPS_SHM_OK) {
            return 0;
        }
        if (rc == TPS_SHM_PYERR) {
            return -1;
        }
        if (rc == TPS_SHM_ETIMEOUT) {
            PyErr_SetString(st->ChannelFull, "no room in the segment "
                            "before the timeout");
            return -1;
        }
        return tps_shm_raise(c, rc, "send");
    }
}

/* Make *p ready to queue obj.  *budget (NULL: no limit) is the heap a
 * batch has left for copies, in granules: a copy that needs a block
 * beyond it raises ValueError at once, since the batch's own blocks
 * would wait for each other forever. */
static int
take_budget(ShmChan *c, uint64_t *budget, uint64_t len)
{
    uint64_t need = tps_shm_granules(len);
    if (need > *budget) {
        PyErr_Format(PyExc_ValueError, "the batch's blocks never fit the "
                     "segment's %llu bytes all at once",
                     (unsigned long long)c->map.heap_size);
        return -1;
    }
    *budget -= need;
    return 0;
}

static int
prep(ShmChan *c, PyObject *obj, uint32_t tag, int writable, int64_t deadline,
     uint64_t *budget, prep_t *p)
{
    shm_state *st = tps_shm_state(c->module);
    Py_buffer view;
    uint32_t idx;
    uint64_t off, len;
    int rc = -1;

    memset(&p->slot, 0, offsetof(tps_shm_slot, data));
    p->sb = NULL;
    p->copied = 0;
    p->slot.tag = tag;
    p->slot.pid = (int32_t)c->pid;
    p->slot.flags = writable ? TPS_SHM_WRITABLE : 0;
    if (Py_IS_TYPE(obj, st->BufferType)
            && memcmp(((ShmMem *)obj)->chan->token, c->token,
                      TPS_SHM_TOKEN) == 0) {
        ShmMem *sb = (ShmMem *)obj;
        if (sb->sent || sb->pid != getpid()) {
            PyErr_SetString(PyExc_ValueError, sb->sent
                            ? "this segment buffer was sent already"
                            : "this segment buffer belongs to another "
                              "process");
            return -1;
        }
        p->sb = sb;
        p->slot.kind = TPS_SHM_SLOT_BLOCK;
        p->slot.block = sb->block;
        p->slot.len = (uint64_t)sb->len;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &view,
                           writable ? PyBUF_FULL : PyBUF_FULL_RO) < 0) {
        return -1;
    }
    len = (uint64_t)view.len;
    if (len <= TPS_SHM_INLINE) {
        p->slot.kind = TPS_SHM_SLOT_INLINE;
        p->slot.len = len;
        rc = PyBuffer_ToContiguous(p->slot.data, &view, view.len, 'C');
        goto finally;
    }
    if ((budget && take_budget(c, budget, len) < 0)
            || tps_shm_alloc_wait(c, len, p->slot.flags, deadline,
                                  &idx) < 0) {
        goto finally;
    }
    /* Ours (OWNED by this pid) until pushed: no one else touches it. */
    off = c->map.blocks[idx].off;
    if (off % TPS_SHM_GRANULE || off > c->map.heap_size
            || len > c->map.heap_size - off) {
        /* Changed since we allocated it: another process wrote it. */
        tps_shm_raise(c, TPS_SHM_ECORRUPT, "send");
        goto finally;
    }
    p->slot.kind = TPS_SHM_SLOT_BLOCK;
    p->slot.block = idx;
    p->slot.len = len;
    p->copied = 1;
    if (PyBuffer_IsContiguous(&view, 'C') && len >= COPY_NOGIL) {
        char *dst = c->map.heap + off;
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, view.buf, len);
        Py_END_ALLOW_THREADS
        rc = 0;
    }
    else {
        rc = PyBuffer_ToContiguous(c->map.heap + off, &view, view.len, 'C');
    }
    if (rc < 0) {
        unprep(c, p);
    }
finally:
    PyBuffer_Release(&view);
    return rc;
}

/* Queue n prepared items at once, waiting for room until deadline. */
static int
commit(ShmChan *c, prep_t *items, Py_ssize_t n, int64_t deadline)
{
    tps_shm_header *h = c->map.hdr;
    shm_state *st = tps_shm_state(c->module);
    int rc;
    for (;;) {
        rc = tps_shm_lock_py(c, deadline);
        if (rc != TPS_SHM_OK) {
            break;
        }
        rc = tps_shm_room(&c->map, (uint64_t)n);
        if (rc == TPS_SHM_EFULL) {
            rc = park(c, &h->space_seq, &h->send_waiters, &h->sends_parked,
                      deadline);
            if (rc == 0) {
                continue;
            }
            break;
        }
        if (rc == TPS_SHM_OK) {
            for (Py_ssize_t i = 0; i < n && rc == TPS_SHM_OK; i++) {
                tps_shm_slot *s = &items[i].slot;
                if (s->kind == TPS_SHM_SLOT_BLOCK) {
                    uint64_t off, len;
                    rc = tps_shm_block_check(&c->map, s->block,
                                             TPS_SHM_OWNED, &off, &len);
                    if (rc == TPS_SHM_OK) {
                        c->map.blocks[s->block].flags = s->flags;
                        s->gen = c->map.blocks[s->block].gen;
                    }
                }
            }
            for (Py_ssize_t i = 0; i < n && rc == TPS_SHM_OK; i++) {
                rc = tps_shm_push(&c->map, &items[i].slot);
            }
        }
        tps_shm_unlock(&c->map);
        break;
    }
    if (rc == TPS_SHM_OK) {
        tps_shm_wake(&h->items_seq, &h->recv_waiters);
        return 0;
    }
    if (rc == TPS_SHM_PYERR) {
        return -1;
    }
    if (rc == TPS_SHM_ETIMEOUT) {
        PyErr_SetString(st->ChannelFull, "the channel stayed full until "
                        "the timeout");
        return -1;
    }
    return tps_shm_raise(c, rc, "send");
}

static int
parse_send_kw(PyObject *kwnames, PyObject *const *kwargs, PyObject **timeout,
              int *writable, uint32_t *tag, PyObject **tags,
              PyObject **encode)
{
    Py_ssize_t n = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "timeout") == 0) {
            *timeout = kwargs[i];
        }
        else if (PyUnicode_CompareWithASCIIString(k, "writable") == 0) {
            int w = PyObject_IsTrue(kwargs[i]);
            if (w < 0) {
                return -1;
            }
            *writable = w;
        }
        else if (tag && PyUnicode_CompareWithASCIIString(k, "tag") == 0) {
            unsigned long t = PyLong_AsUnsignedLong(kwargs[i]);
            if (t == (unsigned long)-1 && PyErr_Occurred()) {
                return -1;
            }
            *tag = (uint32_t)t;
        }
        else if (tags && PyUnicode_CompareWithASCIIString(k, "tags") == 0) {
            *tags = kwargs[i];
        }
        else if (encode
                 && PyUnicode_CompareWithASCIIString(k, "encode") == 0) {
            *encode = kwargs[i];
        }
        else {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R",
                         k);
            return -1;
        }
    }
    return 0;
}

static PyObject *
trackers_for(ShmChan *c, prep_t *items, Py_ssize_t n, int as_list)
{
    PyObject *list = as_list ? PyList_New(n) : NULL;
    if (as_list && list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t;
        if (items[i].sb) {
            items[i].sb->sent = 1;
            t = tps_shm_tracker_new(c, items[i].slot.block,
                                    items[i].slot.gen, 0);
        }
        else {
            /* A copy: the sender's memory is free as soon as it is in. */
            t = tps_shm_tracker_new(c, 0, 0, 1);
        }
        if (!as_list) {
            return t;
        }
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

/* send(obj, *, timeout=None, writable=False, tag=0) -> Tracker */
PyObject *
tps_shm_send(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    PyObject *timeout = NULL;
    int writable = 0;
    uint32_t tag = 0;
    int64_t deadline;
    prep_t p;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "send() takes one object");
        return NULL;
    }
    if (parse_send_kw(kwnames, args + nargs, &timeout, &writable, &tag,
                      NULL, NULL) < 0
            || tps_shm_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    if (prep(c, args[0], tag, writable, deadline, NULL, &p) < 0) {
        return NULL;
    }
    if (commit(c, &p, 1, deadline) < 0) {
        unprep(c, &p);
        return NULL;
    }
    return trackers_for(c, &p, 1, 0);
}

/* One item of send_many(..., encode=f): a small value written into the
 * slot here, else f(obj) -> (payload, tag) made ready as send() would. */
static int
prep_encoded(ShmChan *c, PyObject *obj, PyObject *encode, int writable,
             int64_t deadline, uint64_t *budget, prep_t *p)
{
    PyObject *pair;
    unsigned long t;
    size_t n = tps_shm_value_encode(obj, p->slot.data, TPS_SHM_INLINE);
    int rc = -1;
    if (n) {
        memset(&p->slot, 0, offsetof(tps_shm_slot, data));
        p->sb = NULL;
        p->copied = 0;
        p->slot.kind = TPS_SHM_SLOT_INLINE;
        p->slot.len = n;
        p->slot.tag = 1;    /* a value: tpshare/shm.py's _TAG_VALUE */
        p->slot.pid = (int32_t)c->pid;
        p->slot.flags = writable ? TPS_SHM_WRITABLE : 0;
        return 0;
    }
    pair = PyObject_CallOneArg(encode, obj);
    if (pair == NULL) {
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "encode() returns (payload, tag)");
        goto finally;
    }
    t = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(pair, 1));
    if (t == (unsigned long)-1 && PyErr_Occurred()) {
        goto finally;
    }
    rc = prep(c, PyTuple_GET_ITEM(pair, 0), (uint32_t)t, writable, deadline,
              budget, p);
finally:
    Py_DECREF(pair);
    return rc;
}

/* send_many(items, *, timeout=None, writable=False, tag=0, tags=None,
 * encode=None) -> [Tracker]: all or nothing, under one lock
 * acquisition.  tags, a sequence as long as items, gives each item's
 * tag; encode (tpshare.shm.Channel's) makes each item a value: small
 * ones here, the rest by encode(item) -> (payload, tag). */
PyObject *
tps_shm_send_many(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    PyObject *timeout = NULL, *seq = NULL, *res = NULL, *tags = NULL;
    PyObject *tagseq = NULL, *encode = NULL;
    int writable = 0;
    uint32_t tag = 0;
    int64_t deadline;
    prep_t *items = NULL;
    Py_ssize_t n, done = 0, nsb = 0;
    uint64_t budget = c->map.ngranules;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "send_many() takes one sequence");
        return NULL;
    }
    if (parse_send_kw(kwnames, args + nargs, &timeout, &writable, &tag,
                      &tags, &encode) < 0
            || tps_shm_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    if (encode == Py_None) {
        encode = NULL;
    }
    if (encode != NULL && tags != NULL && tags != Py_None) {
        PyErr_SetString(PyExc_TypeError, "encode gives the tags");
        return NULL;
    }
    seq = PySequence_Fast(args[0], "send_many() takes a sequence");
    if (seq == NULL) {
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (tags != NULL && tags != Py_None) {
        tagseq = PySequence_Fast(tags, "tags must be a sequence");
        if (tagseq == NULL) {
            goto finally;
        }
        if (PySequence_Fast_GET_SIZE(tagseq) != n) {
            PyErr_SetString(PyExc_ValueError, "one tag per item");
            goto finally;
        }
    }
    if ((uint64_t)n > c->map.nslots) {
        PyErr_Format(PyExc_ValueError, "%zd items never fit a channel of "
                     "%u slots", n, c->map.nslots);
        goto finally;
    }
    items = PyMem_Malloc(sizeof(prep_t) * (size_t)(n ? n : 1));
    if (items == NULL) {
        PyErr_NoMemory();
        goto finally;
    }
    /* The batch's buffers hold their blocks already: what is left of
     * the heap is for its copies. */
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, j);
        if (Py_IS_TYPE(o, tps_shm_state(c->module)->BufferType)) {
            uint64_t g = tps_shm_granules((uint64_t)((ShmMem *)o)->len);
            budget = budget > g ? budget - g : 0;
        }
    }
    for (; done < n; done++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, done);
        int rc;
        for (Py_ssize_t j = 0; nsb && j < done; j++) {
            if (items[j].sb && (PyObject *)items[j].sb == o) {
                PyErr_SetString(PyExc_ValueError, "a segment buffer "
                                "appears twice");
                goto finally;
            }
        }
        if (tagseq != NULL) {
            unsigned long t = PyLong_AsUnsignedLong(
                PySequence_Fast_GET_ITEM(tagseq, done));
            if (t == (unsigned long)-1 && PyErr_Occurred()) {
                goto finally;
            }
            tag = (uint32_t)t;
        }
        rc = encode ? prep_encoded(c, o, encode, writable, deadline, &budget,
                                   &items[done])
                    : prep(c, o, tag, writable, deadline, &budget,
                           &items[done]);
        if (rc < 0) {
            goto finally;
        }
        nsb += items[done].sb != NULL;
    }
    if (n && commit(c, items, n, deadline) < 0) {
        goto finally;
    }
    res = trackers_for(c, items, n, 1);
    done = 0;   /* queued: nothing to undo */
finally:
    for (Py_ssize_t j = 0; j < done; j++) {
        unprep(c, &items[j]);
    }
    PyMem_Free(items);
    Py_XDECREF(tagseq);
    Py_DECREF(seq);
    return res;
}

/* The object for a taken slot: a memoryview (of a copy for an inline
 * item, of the segment for a block).  Frees the block on failure. */
PyObject *
tps_shm_take(ShmChan *c, const tps_shm_slot *s)
{
    shm_state *st = tps_shm_state(c->module);
    PyObject *mem, *mv;
    int ro = !(s->flags & TPS_SHM_WRITABLE);
    uint64_t off;
    if (s->kind == TPS_SHM_SLOT_INLINE) {
        mem = ro ? PyBytes_FromStringAndSize((const char *)s->data,
                                             (Py_ssize_t)s->len)
                 : PyByteArray_FromStringAndSize((const char *)s->data,
                                                 (Py_ssize_t)s->len);
    }
    else {
        memcpy(&off, s->data, sizeof(off));
        mem = tps_shm_mem_new(c, st->ViewType, s->block, s->gen, off,
                              s->len, ro);
        if (mem == NULL) {
            tps_shm_release_block(c, s->block, s->gen, TPS_SHM_HELD);
        }
    }
    if (mem == NULL) {
        return NULL;
    }
    mv = PyMemoryView_FromObject(mem);
    Py_DECREF(mem);
    return mv;
}

/* Take up to max items, waiting for the first until deadline. */
Py_ssize_t
tps_shm_take_slots(ShmChan *c, tps_shm_slot *out, Py_ssize_t max,
                   int64_t deadline)
{
    tps_shm_header *h = c->map.hdr;
    shm_state *st = tps_shm_state(c->module);
    Py_ssize_t got = 0;
    int rc;
    for (;;) {
        rc = tps_shm_lock_py(c, deadline);
        if (rc != TPS_SHM_OK) {
            break;
        }
        while (got < max && (rc = tps_shm_pop(&c->map, &out[got])) == 0) {
            got++;
        }
        if (got == 0 && rc == TPS_SHM_EEMPTY) {
            rc = park(c, &h->items_seq, &h->recv_waiters, &h->recvs_parked,
                      deadline);
            if (rc == 0) {
                continue;
            }
            break;
        }
        tps_shm_unlock(&c->map);
        break;
    }
    if (got) {
        tps_shm_wake(&h->space_seq, &h->send_waiters);
        /* A bad slot after good ones is reported by the next call. */
        return got;
    }
    if (rc == TPS_SHM_PYERR) {
        return -1;
    }
    if (rc == TPS_SHM_ETIMEOUT) {
        PyErr_SetString(st->ChannelEmpty, "the channel stayed empty until "
                        "the timeout");
        return -1;
    }
    if (rc == TPS_SHM_ECORRUPT) {
        tps_shm_wake(&h->space_seq, &h->send_waiters);
    }
    return tps_shm_raise(c, rc, "recv");
}

static PyObject *
recv_common(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames, int tagged)
{
    PyObject *timeout = nargs ? args[0] : NULL, *mv, *res;
    int64_t deadline;
    tps_shm_slot s;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 1 || nargs + nk > 1 || (nk && PyUnicode_CompareWithASCIIString(
            PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0)) {
        PyErr_SetString(PyExc_TypeError, "recv() takes only timeout");
        return NULL;
    }
    if (nk) {
        timeout = args[0];
    }
    if (tps_shm_deadline(timeout, &deadline) < 0
            || tps_shm_take_slots(c, &s, 1, deadline) < 0) {
        return NULL;
    }
    mv = tps_shm_take(c, &s);
    if (mv == NULL || !tagged) {
        return mv;
    }
    res = Py_BuildValue("(IN)", s.tag, mv);
    return res;
}

PyObject *
tps_shm_recv(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    return recv_common(c, args, nargs, kwnames, 0);
}

/* _recv(timeout=None) -> (tag, memoryview) */
PyObject *
tps_shm_recv_tagged(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    return recv_common(c, args, nargs, kwnames, 1);
}
