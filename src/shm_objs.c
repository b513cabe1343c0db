/* shm_objs.c - tpshare._shm: segment memory objects (received views and
 * buffers not sent yet), trackers, and the module.
 *
 * A View or a Buffer exports one block of the segment.  Python's
 * memoryview holds it while any view of it lives; when it goes, so does
 * the block (a View frees a block it HOLDs, a Buffer one it OWNs and did
 * not send), in the process that took it only.
 */
#define _GNU_SOURCE
#include "shm_py.h"

#include <string.h>
#include <unistd.h>

#define TRACKER_SLICE_NS 100000000

extern PyType_Spec tps_shm_seg_spec;

/* Free block idx if this process holds it in `state` (for HELD, with
 * generation gen).  Silent: called from deallocators. */
void
tps_shm_release_block(ShmChan *c, uint32_t idx, uint32_t gen,
                      uint32_t state)
{
    tps_shm_header *h = c->map.hdr;
    tps_shm_block *b;
    if (idx >= c->map.nblocks || tps_shm_lock_py(c, -1) < 0) {
        return;
    }
    b = &c->map.blocks[idx];
    if (b->state == state && b->pid == (int32_t)getpid()
            && (state == TPS_SHM_OWNED || b->gen == gen)) {
        tps_shm_free_block(&c->map, idx);
    }
    tps_shm_unlock(&c->map);
    tps_shm_wake(&h->release_seq, &h->release_waiters);
    tps_shm_wake(&h->space_seq, &h->send_waiters);
}

/* New reference: memory of block idx at heap offset off (checked by the
 * caller), exported read-only or not. */
PyObject *
tps_shm_mem_new(ShmChan *c, PyTypeObject *type, uint32_t block, uint32_t gen,
                uint64_t off, uint64_t len, int readonly)
{
    ShmMem *m = PyObject_New(ShmMem, type);
    if (m == NULL) {
        return NULL;
    }
    m->chan = (ShmChan *)Py_NewRef(c);
    m->ptr = c->map.heap + off;
    m->len = (Py_ssize_t)len;
    m->block = block;
    m->gen = gen;
    m->pid = getpid();
    m->readonly = readonly;
    m->sent = 0;
    m->exports = 0;
    return (PyObject *)m;
}

static void
mem_dealloc(ShmMem *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    shm_state *st = tps_shm_state(m->chan->module);
    if (!m->sent && m->pid == getpid()) {
        tps_shm_release_block(m->chan, m->block, m->gen,
                              tp == st->ViewType ? TPS_SHM_HELD
                                                 : TPS_SHM_OWNED);
    }
    Py_CLEAR(m->chan);
    PyObject_Free(m);
    Py_DECREF(tp);
}

static int
mem_getbuffer(ShmMem *m, Py_buffer *view, int flags)
{
    if (m->sent) {
        PyErr_SetString(PyExc_BufferError, "this segment buffer was sent: "
                        "its memory is the receiver's now");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)m, m->ptr, m->len, m->readonly,
                          flags) < 0) {
        return -1;
    }
    m->exports++;
    return 0;
}

static void
mem_releasebuffer(ShmMem *m, Py_buffer *Py_UNUSED(view))
{
    m->exports--;
}

static PyObject *
mem_get_nbytes(ShmMem *m, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(m->len);
}

static PyObject *
mem_get_sent(ShmMem *m, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(m->sent);
}

static Py_ssize_t
mem_len(ShmMem *m)
{
    return m->len;
}

static PyGetSetDef mem_getset[] = {
    {"nbytes", (getter)mem_get_nbytes, NULL, NULL, NULL},
    {"sent", (getter)mem_get_sent, NULL, NULL, NULL},
    {NULL},
};

static PyType_Slot view_slots[] = {
    {Py_tp_dealloc, mem_dealloc},
    {Py_bf_getbuffer, mem_getbuffer},
    {Py_bf_releasebuffer, mem_releasebuffer},
    {Py_tp_getset, mem_getset},
    {Py_sq_length, mem_len},
    {Py_tp_doc, "Received memory of a shared segment: the block is freed "
                "when the last memoryview of it goes."},
    {0, NULL},
};

static PyType_Spec view_spec = {
    .name = "tpshare._shm.View",
    .basicsize = sizeof(ShmMem),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = view_slots,
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_dealloc, mem_dealloc},
    {Py_bf_getbuffer, mem_getbuffer},
    {Py_bf_releasebuffer, mem_releasebuffer},
    {Py_tp_getset, mem_getset},
    {Py_sq_length, mem_len},
    {Py_tp_doc, "Writable memory in a shared segment: send() passes it "
                "without a copy; dropped unsent, it goes back."},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "tpshare._shm.Buffer",
    .basicsize = sizeof(ShmMem),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = buffer_slots,
};

/* New reference: a tracker of block idx at generation gen, or one that
 * reports released from the start. */
PyObject *
tps_shm_tracker_new(ShmChan *c, uint32_t block, uint32_t gen, int released)
{
    shm_state *st = tps_shm_state(c->module);
    ShmTracker *t;
    if (released && st->released != NULL) {
        return Py_NewRef(st->released);
    }
    t = PyObject_New(ShmTracker, st->TrackerType);
    if (t == NULL) {
        return NULL;
    }
    t->chan = released ? NULL : (ShmChan *)Py_NewRef(c);
    t->block = block;
    t->gen = gen;
    return (PyObject *)t;
}

static int
tracker_done(ShmTracker *t)
{
    /* block < nblocks: the tracker was made for a block of this map. */
    return t->chan == NULL
           || __atomic_load_n(&t->chan->map.blocks[t->block].gen,
                              __ATOMIC_ACQUIRE) != t->gen;
}

static void
tracker_dealloc(ShmTracker *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    Py_CLEAR(t->chan);
    PyObject_Free(t);
    Py_DECREF(tp);
}

static PyObject *
tracker_get_released(ShmTracker *t, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(tracker_done(t));
}

/* wait(timeout=None) -> True once released, False on timeout.  Each
 * slice without news also frees what dead receivers held. */
static PyObject *
tracker_wait(ShmTracker *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    int64_t deadline, now, until;
    tps_shm_header *h;
    uint32_t seen;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:wait", kwlist,
                                     &timeout)
            || tps_shm_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    while (!tracker_done(t)) {
        h = t->chan->map.hdr;
        seen = __atomic_load_n(&h->release_seq, __ATOMIC_SEQ_CST);
        __atomic_store_n(&h->release_waiters, 1, __ATOMIC_SEQ_CST);
        now = tps_shm_now();
        if (tracker_done(t) || (deadline >= 0 && now >= deadline)) {
            break;
        }
        until = now + TRACKER_SLICE_NS;
        if (deadline >= 0 && deadline < until) {
            until = deadline;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = tps_shm_wait(&h->release_seq, seen, until);
        Py_END_ALLOW_THREADS
        /* Each slice: a signal may have come outside the system call. */
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
        if (rc == TPS_SHM_ETIMEOUT && !tracker_done(t)
                && tps_shm_lock_py(t->chan, -1) == TPS_SHM_OK) {
            tps_shm_reclaim(&t->chan->map);
            tps_shm_unlock(&t->chan->map);
        }
    }
    return PyBool_FromLong(tracker_done(t));
}

static PyObject *
tracker_repr(ShmTracker *t)
{
    return PyUnicode_FromFormat("<tpshare.shm.Tracker %s>",
                                tracker_done(t) ? "released" : "pending");
}

static PyMethodDef tracker_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))tracker_wait,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL},
};

static PyGetSetDef tracker_getset[] = {
    {"released", (getter)tracker_get_released, NULL, NULL, NULL},
    {NULL},
};

static PyType_Slot tracker_slots[] = {
    {Py_tp_dealloc, tracker_dealloc},
    {Py_tp_methods, tracker_methods},
    {Py_tp_getset, tracker_getset},
    {Py_tp_repr, tracker_repr},
    {Py_tp_doc, "Reports when what a send passed is released."},
    {0, NULL},
};

static PyType_Spec tracker_spec = {
    .name = "tpshare.shm.Tracker",
    .basicsize = sizeof(ShmTracker),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tracker_slots,
};

static int
add_type(PyObject *module, PyType_Spec *spec, PyObject *base,
         PyTypeObject **out)
{
    PyObject *t = PyType_FromModuleAndSpec(module, spec, base);
    if (t == NULL) {
        return -1;
    }
    *out = (PyTypeObject *)t;
    return PyModule_AddObjectRef(module, strrchr(spec->name, '.') + 1, t);
}

/* New reference: a tracker released from the start (it never changes,
 * so every copy sent shares it). */
static PyObject *
make_released(shm_state *st)
{
    ShmTracker *t = PyObject_New(ShmTracker, st->TrackerType);
    if (t != NULL) {
        t->chan = NULL;
        t->block = 0;
        t->gen = 0;
    }
    return (PyObject *)t;
}

static int
shm_exec(PyObject *module)
{
    shm_state *st = tps_shm_state(module);
    PyObject *core = PyImport_ImportModule("tpshare._tpshare"), *base;
    int rc = -1;
    if (core == NULL) {
        return -1;
    }
    st->ChannelClosed = PyObject_GetAttrString(core, "ChannelClosed");
    st->ChannelEmpty = PyObject_GetAttrString(core, "ChannelEmpty");
    st->ChannelFull = PyObject_GetAttrString(core, "ChannelFull");
    base = PyObject_GetAttrString(core, "Error");
    if (st->ChannelClosed == NULL || st->ChannelEmpty == NULL
            || st->ChannelFull == NULL || base == NULL) {
        goto finally;
    }
    st->CorruptSegmentError = PyErr_NewExceptionWithDoc(
        "tpshare.shm.CorruptSegmentError",
        "The shared segment breaks its invariants: another process wrote "
        "it, or it is not a tpshare.shm segment.", base, NULL);
    if (st->CorruptSegmentError == NULL
            || PyModule_AddObjectRef(module, "CorruptSegmentError",
                                     st->CorruptSegmentError) < 0
            || add_type(module, &tps_shm_seg_spec, NULL, &st->ChanType) < 0
            || add_type(module, &view_spec, NULL, &st->ViewType) < 0
            || add_type(module, &buffer_spec, NULL, &st->BufferType) < 0
            || add_type(module, &tracker_spec, NULL, &st->TrackerType) < 0
            || (st->released = make_released(st)) == NULL
            || PyModule_AddIntConstant(module, "INLINE", TPS_SHM_INLINE) < 0
            || PyModule_AddIntConstant(module, "GRANULE",
                                       TPS_SHM_GRANULE) < 0) {
        goto finally;
    }
    rc = 0;
finally:
    Py_XDECREF(base);
    Py_DECREF(core);
    return rc;
}

static int
shm_traverse(PyObject *module, visitproc visit, void *arg)
{
    shm_state *st = tps_shm_state(module);
    Py_VISIT(st->ChanType);
    Py_VISIT(st->BufferType);
    Py_VISIT(st->ViewType);
    Py_VISIT(st->TrackerType);
    Py_VISIT(st->ChannelClosed);
    Py_VISIT(st->ChannelEmpty);
    Py_VISIT(st->ChannelFull);
    Py_VISIT(st->CorruptSegmentError);
    Py_VISIT(st->released);
    return 0;
}

static int
shm_clear(PyObject *module)
{
    shm_state *st = tps_shm_state(module);
    Py_CLEAR(st->ChanType);
    Py_CLEAR(st->BufferType);
    Py_CLEAR(st->ViewType);
    Py_CLEAR(st->TrackerType);
    Py_CLEAR(st->ChannelClosed);
    Py_CLEAR(st->ChannelEmpty);
    Py_CLEAR(st->ChannelFull);
    Py_CLEAR(st->CorruptSegmentError);
    Py_CLEAR(st->released);
    return 0;
}

static void
shm_free(void *module)
{
    shm_clear((PyObject *)module);
}

static PyModuleDef_Slot shm_slots[] = {
    {Py_mod_exec, shm_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    TPS_MOD_GIL_SLOT
    {0, NULL},
};

PyModuleDef tps_shm_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "tpshare._shm",
    .m_doc = "Channels between processes in a shared memory segment.",
    .m_size = sizeof(shm_state),
    .m_slots = shm_slots,
    .m_traverse = shm_traverse,
    .m_clear = shm_clear,
    .m_free = shm_free,
};

PyMODINIT_FUNC
PyInit__shm(void)
{
    return PyModuleDef_Init(&tps_shm_module);
}
