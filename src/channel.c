/* channel.c - tpshare.Channel (the Object Channel), tpshare.MemChannel and
 * tpshare.Queue (PEP 734's Queue API on the Object Channel).
 *
 * Both are handles on one channel of the core (chancore.c); they differ
 * only in what they put in it.  MemChannel.send() accepts buffer
 * exporters only and shares them zero-copy with the buffer handler,
 * returning a Tracker; Channel.send() shares any shareable object through
 * the registry.  Receiving is the same code for both: take a record,
 * rebuild it (a memoryview for a buffer), release the record.  So the
 * difference between the two designs, as measured, is the object layer
 * alone.
 *
 * Handles are shareable: a handle's record holds a reference to the
 * channel and rebuilds as a handle of the receiving interpreter's own
 * class; a channel lives while any handle or record holds it.
 *
 * Items whose sender exited before they were received (chancore.c) are
 * delivered as neutral copies when their value cannot change; the others
 * follow PEP 734's unbounditems policy, per channel or per send:
 * tpshare.UNBOUND is received in their place, or their recv raises
 * ItemInterpreterDestroyed (UNBOUND_ERROR: the item is consumed), or they
 * are removed (UNBOUND_REMOVE).
 */
#include "tpshare_internal.h"

typedef struct {
    PyObject_HEAD
    tps_channel *ch;             /* held */
    /* The exception of the item at which a recv_many() stopped after
     * rebuilding the items before it (returned by that call): raised by
     * the next receive on this handle.  Strong reference, or NULL. */
    PyObject *pending;
} Chan;

static inline tps_module_state *
state_of(PyObject *op)
{
    return PyType_GetModuleState(Py_TYPE(op));
}

PyObject *
tps_raise_error(tps_module_state *state, int code)
{
    switch (code) {
    case TPS_ERR_CLOSED:
        PyErr_SetString(state->ChannelClosed, "the channel is closed");
        break;
    case TPS_ERR_EMPTY:
        PyErr_SetString(state->ChannelEmpty,
                        "timed out waiting for an item");
        break;
    case TPS_ERR_FULL:
        PyErr_SetString(state->ChannelFull, "timed out waiting for room");
        break;
    case TPS_ERR_NOMEM:
        PyErr_NoMemory();
        break;
    case TPS_ERR_EXITING:
        PyErr_Format(state->ChannelClosed,
                     "interpreter %lld is being stopped because the process "
                     "is exiting: its tpshare waits end",
                     (long long)tps_current_interp_id());
        break;
    case TPS_ERR_FORKED:
        PyErr_SetString(state->ChannelClosed,
                        "the channel was created before fork(): it is not "
                        "usable in the child process (its items and waiters "
                        "belong to the parent); create channels after the "
                        "fork");
        break;
    default:
        assert(PyErr_Occurred());
        break;
    }
    return NULL;
}

/* Keyword parsing for the hot methods, without PyArg's overhead.
 * Positional parameters fill pos[0..npos_max); keyword-only ones (names
 * in kwlist) fill kw[].  Unset slots stay NULL.  Returns 0 or -1. */
static int
parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
      PyObject *kwnames, Py_ssize_t npos_min, Py_ssize_t npos_max,
      const char *const *posnames, PyObject **pos,
      const char *const *kwlist, PyObject **kw)
{
    if (nargs < npos_min || nargs > npos_max) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd positional "
                     "arguments but %zd were given", fname, npos_min,
                     npos_max, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        pos[i] = args[i];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int matched = 0;
        for (int j = 0; kwlist && kwlist[j]; j++) {
            if (tps_unicode_equal_ascii(name, kwlist[j])) {
                kw[j] = args[nargs + i];
                matched = 1;
            }
        }
        for (Py_ssize_t j = nargs; !matched && posnames && j < npos_max; j++) {
            if (tps_unicode_equal_ascii(name, posnames[j])) {
                pos[j] = args[nargs + i];
                matched = 1;
            }
        }
        if (!matched) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument %R",
                         fname, name);
            return -1;
        }
    }
    for (Py_ssize_t j = 0; j < npos_min; j++) {
        if (pos[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing argument '%s'",
                         fname, posnames[j]);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Items of an interpreter that ended (unbounditems).
 */

/* tpshare.UNBOUND, UNBOUND_ERROR and UNBOUND_REMOVE: one instance per
 * policy in each interpreter's module state. */
typedef struct {
    PyObject_HEAD
    unsigned int policy;         /* TPS_UNBOUND_* */
} UnboundItem;

static const char *const unbound_names[] = {
    "UNBOUND", "UNBOUND_ERROR", "UNBOUND_REMOVE",
};

/* op: borrowed.  New reference. */
static PyObject *
unbound_repr(PyObject *op)
{
    return PyUnicode_FromFormat(
        "tpshare.%s", unbound_names[((UnboundItem *)op)->policy - 1]);
}

/* Pickled (and copied) as the module attribute: the receiver's own.
 * op: borrowed.  New reference. */
static PyObject *
unbound_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(
        unbound_names[((UnboundItem *)op)->policy - 1]);
}

static void
unbound_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static PyMethodDef unbound_methods[] = {
    {"__reduce__", unbound_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyType_Slot unbound_slots[] = {
    {Py_tp_repr, unbound_repr},
    {Py_tp_dealloc, unbound_dealloc},
    {Py_tp_methods, unbound_methods},
    {Py_tp_doc, "What a channel does with an item whose sender ended "
                "before it was received and that could not be copied "
                "(unbounditems=): tpshare.UNBOUND, UNBOUND_ERROR or "
                "UNBOUND_REMOVE."},
    {0, NULL},
};

static PyType_Spec unbound_spec = {
    .name = "tpshare.UnboundItem",
    .basicsize = sizeof(UnboundItem),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = unbound_slots,
};

/* The TPS_UNBOUND_* named by an unbounditems argument (borrowed), or
 * `none` for None.  0 or -1 with TypeError. */
static int
parse_unbound(tps_module_state *state, PyObject *arg, unsigned int none,
              unsigned int *policy)
{
    if (arg == NULL || arg == Py_None) {
        *policy = none;
        return 0;
    }
    for (unsigned int i = 0; i < 3; i++) {
        if (arg == state->unbound[i]) {
            *policy = i + 1;
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError,
                 "unbounditems must be tpshare.UNBOUND, "
                 "tpshare.UNBOUND_ERROR, tpshare.UNBOUND_REMOVE or None, "
                 "not %R", arg);
    return -1;
}

/* The marker records' registration: neutral records made by the exit
 * hook of an interpreter (chancore.c) in place of items it could not
 * copy; data.aux is the policy.  Made once per process. */
static tps_entry *unbound_entry;
static pthread_once_t unbound_once = PTHREAD_ONCE_INIT;

/* obj: borrowed, an int (the policy). */
static int
unbound_share(PyObject *obj, TpShare_Data *data)
{
    long policy = PyLong_AsLong(obj);
    if (policy == -1 && PyErr_Occurred()) {
        return -1;
    }
    data->aux = (uint32_t)policy;
    return 0;
}

/* New reference: the receiver's tpshare.UNBOUND; or NULL with
 * ItemInterpreterDestroyed. */
static PyObject *
unbound_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    tps_interp *st = tps_interp_current();
    tps_module_state *state = st ? tps_interp_module_state(st) : NULL;
    if (state == NULL) {
        return NULL;
    }
    if (data->aux == TPS_UNBOUND_ERROR) {
        PyErr_SetString(state->ItemInterpreterDestroyed,
                        "the interpreter that sent this item ended before "
                        "it was received, and the item was a view of its "
                        "memory (unbounditems=tpshare.UNBOUND_ERROR)");
        return NULL;
    }
    return Py_NewRef(state->unbound[TPS_UNBOUND_MARK - 1]);
}

static void
unbound_free(TpShare_Data *Py_UNUSED(data))
{
    /* Nothing: the data is inline. */
}

static const TpShare_Hooks unbound_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_ANY_RESULT,
    "tpshare.unbound", unbound_share, unbound_rebuild, unbound_free,
};

static void
make_unbound_entry(void)
{
    unbound_entry = tps_entry_new(NULL, -1, &unbound_hooks);
}

TpShare_Record *
tps_unbound_marker(unsigned int policy)
{
    assert(tps_thread_state() != NULL);
    assert(policy == TPS_UNBOUND_MARK || policy == TPS_UNBOUND_ERROR);
    pthread_once(&unbound_once, make_unbound_entry);
    if (unbound_entry == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *arg = PyLong_FromUnsignedLong(policy);
    if (arg == NULL) {
        return NULL;
    }
    TpShare_Record *rec = tps_share_with(arg, unbound_entry);
    Py_DECREF(arg);
    return rec;
}

/* Make the UNBOUND objects and ItemInterpreterDestroyed of this
 * interpreter's module (borrowed), held by `state` and the module.  0 or
 * -1 with an exception. */
static int
init_unbound(PyObject *module, tps_module_state *state)
{
    state->UnboundType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &unbound_spec, NULL);
    if (state->UnboundType == NULL
        || PyModule_AddType(module, state->UnboundType) < 0)
    {
        return -1;
    }
    for (unsigned int i = 0; i < 3; i++) {
        UnboundItem *item = PyObject_New(UnboundItem, state->UnboundType);
        if (item == NULL) {
            return -1;
        }
        item->policy = i + 1;
        state->unbound[i] = (PyObject *)item;
        if (PyModule_AddObjectRef(module, unbound_names[i],
                                  state->unbound[i]) < 0)
        {
            return -1;
        }
    }
    state->ItemInterpreterDestroyed = PyErr_NewExceptionWithDoc(
        "tpshare.ItemInterpreterDestroyed",
        "The interpreter that sent the item ended before it was received, "
        "and the item could not be copied (unbounditems=UNBOUND_ERROR).",
        state->Error, NULL);
    if (state->ItemInterpreterDestroyed == NULL
        || PyModule_AddObjectRef(module, "ItemInterpreterDestroyed",
                                 state->ItemInterpreterDestroyed) < 0)
    {
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Creating handles.
 */

typedef enum { KIND_CHANNEL, KIND_MEM, KIND_QUEUE } kind;

static inline kind
kind_of(PyObject *self, tps_module_state *state)
{
    PyTypeObject *tp = Py_TYPE(self);
    return tp == state->MemChannelType ? KIND_MEM
           : tp == state->QueueType ? KIND_QUEUE : KIND_CHANNEL;
}

/* A handle of `type` on `ch`, taking over the caller's reference.  New
 * reference, or NULL (the channel reference is then released). */
static PyObject *
wrap(PyTypeObject *type, tps_channel *ch)
{
    /* Tracked by the collector: a pending exception's traceback may lead
     * back to the handle. */
    Chan *self = PyObject_GC_New(Chan, type);
    if (self == NULL) {
        tps_channel_decref(ch);
        return NULL;
    }
    self->ch = ch;
    self->pending = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
chan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxsize", "spin", "identity", "fallback",
                             "unbounditems", NULL};
    tps_module_state *state = PyType_GetModuleState(type);
    Py_ssize_t maxsize = 0;
    PyObject *spin_arg = NULL;
    int64_t spin_ns = -1;        /* adaptive */
    int identity = 0;
    PyObject *fallback = NULL;
    PyObject *unbound_arg = NULL;
    unsigned int flags = 0, unbound;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n$OpOO", kwlist,
                                     &maxsize, &spin_arg, &identity,
                                     &fallback, &unbound_arg)) {
        return NULL;
    }
    if (parse_unbound(state, unbound_arg, TPS_UNBOUND_MARK, &unbound) < 0) {
        return NULL;
    }
    flags |= unbound << TPS_CHAN_UNBOUND_SHIFT;
    if (maxsize < 0) {
        PyErr_SetString(PyExc_ValueError, "maxsize must be >= 0");
        return NULL;
    }
    if (spin_arg != NULL && spin_arg != Py_None) {
        double spin = PyFloat_AsDouble(spin_arg);
        if (spin == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(spin >= 0 && spin <= 1.0)) {
            PyErr_SetString(PyExc_ValueError,
                            "spin must be None or between 0 and 1 second");
            return NULL;
        }
        spin_ns = (int64_t)(spin * 1e9);
    }
    if (type == state->QueueType && fallback == NULL) {
        /* Like the standard library's queues: anything picklable goes. */
        flags |= TPS_CHAN_PICKLE;
    }
    if (fallback != NULL && fallback != Py_None) {
        if (!PyUnicode_Check(fallback)
            || !tps_unicode_equal_ascii(fallback, "pickle"))
        {
            PyErr_Format(PyExc_ValueError,
                         "fallback must be None or 'pickle', not %R",
                         fallback);
            return NULL;
        }
        flags |= TPS_CHAN_PICKLE;
    }
    if (identity) {
        flags |= TPS_CHAN_IDENTITY;
    }
    if (type == state->MemChannelType && (flags & TPS_CHAN_PICKLE)) {
        PyErr_SetString(PyExc_TypeError,
                        "MemChannel carries buffers only: no fallback");
        return NULL;
    }
    tps_interp *st = tps_enter();
    if (st == NULL) {
        return NULL;
    }
    tps_channel *ch = tps_channel_new(maxsize, spin_ns, flags);
    if (ch == NULL) {
        return NULL;
    }
    return wrap(type, ch);
}

static PyObject *
chan_from_id(PyObject *cls, PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    tps_channel *ch = tps_channel_lookup(id);
    if (ch == NULL) {
        PyErr_Format(PyExc_KeyError, "no channel with id %lld", id);
        return NULL;
    }
    return wrap((PyTypeObject *)cls, ch);
}

/* A handle that dies with an exception still pending reports it (an item
 * was consumed and its error never seen otherwise). */
static void
chan_finalize(PyObject *op)
{
    Chan *self = (Chan *)op;
    if (self->pending == NULL) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    PyErr_SetRaisedException(self->pending);   /* steals it */
    self->pending = NULL;
    PyErr_WriteUnraisable(op);
    PyErr_SetRaisedException(saved);
}

static int
chan_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((Chan *)op)->pending);
    return 0;
}

static int
chan_clear(PyObject *op)
{
    Py_CLEAR(((Chan *)op)->pending);
    return 0;
}

static void
chan_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    if (PyObject_CallFinalizerFromDealloc(op) < 0) {
        return;   /* resurrected by the unraisable hook */
    }
    PyObject_GC_UnTrack(op);
    chan_clear(op);
    tps_channel_decref(((Chan *)op)->ch);
    PyObject_GC_Del(op);
    Py_DECREF(tp);
}

/* Raise the exception left by an earlier recv_many() on this handle, if
 * any: returns -1 then, else 0. */
static int
raise_pending(PyObject *self)
{
    Chan *c = (Chan *)self;
    if (c->pending == NULL) {
        return 0;
    }
    PyObject *exc = c->pending;
    c->pending = NULL;
    PyErr_SetRaisedException(exc);   /* steals it */
    return -1;
}

/* Raise for a TPS_ERR_* code; Queue handles raise QueueEmpty/QueueFull. */
static PyObject *
raise_for(PyObject *self, tps_module_state *state, int code)
{
    if (kind_of(self, state) == KIND_QUEUE) {
        if (code == TPS_ERR_EMPTY) {
            PyErr_SetString(state->QueueEmpty, "the queue is empty");
            return NULL;
        }
        if (code == TPS_ERR_FULL) {
            PyErr_SetString(state->QueueFull, "the queue is full");
            return NULL;
        }
    }
    return tps_raise_error(state, code);
}

/* ---------------------------------------------------------------------
 * The object layer: what goes in, what comes out.
 */

/* A record of pickle.dumps(obj), marked as a pickled copy, or NULL. */
static TpShare_Record *
pickled_record(PyObject *obj)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        return NULL;
    }
    PyObject *raw = PyObject_CallMethod(pickle, "dumps", "Oi", obj, 5);
    Py_DECREF(pickle);
    if (raw == NULL) {
        return NULL;
    }
    TpShare_Record *rec = tps_share_with(raw, tps_pickle_entry);
    Py_DECREF(raw);
    return rec;
}

/* The record for one object sent through `self` by interpreter `owner`
 * (the current one), or NULL. */
static TpShare_Record *
make_record(PyObject *self, kind k, tps_module_state *state, PyObject *obj,
            int writable, int64_t owner)
{
    tps_channel *ch = ((Chan *)self)->ch;

    if (k == KIND_MEM) {
        if (Py_TYPE(obj) == state->BufferType) {
            /* Memory of no interpreter: a neutral record, no export. */
            return tps_share(obj);
        }
        if (!PyObject_CheckBuffer(obj)) {
            PyErr_Format(PyExc_TypeError,
                         "MemChannel.send() needs a buffer exporter "
                         "(bytes, bytearray, memoryview, array...), not "
                         "'%.200s'", Py_TYPE(obj)->tp_name);
            return NULL;
        }
        return tps_share_with(obj, writable ? tps_buffer_writable_entry
                                            : tps_buffer_entry);
    }
    unsigned int flags = tps_channel_flags(ch);
    /* With identity on, every immutable object of the message, at any
     * depth, is tagged with its serial. */
    TpShare_Record *rec = tps_share_in(
        obj, owner, (flags & TPS_CHAN_IDENTITY) ? state->identity : NULL);
    if (rec == NULL) {
        if ((flags & TPS_CHAN_PICKLE)
            && PyErr_ExceptionMatches(state->NotShareableError))
        {
            PyObject *exc = PyErr_GetRaisedException();
            rec = pickled_record(obj);
            if (rec == NULL) {
                /* Neither shareable nor picklable: say both. */
                PyObject *cur = PyErr_GetRaisedException();
                PyException_SetContext(cur, exc);
                PyErr_SetRaisedException(cur);
            }
            else {
                Py_DECREF(exc);
            }
        }
        return rec;
    }
    return rec;
}

/* The received object for `rec` (borrowed).  New reference or NULL. */
static PyObject *
rebuild(kind k, tps_module_state *state, TpShare_Record *rec)
{
    PyObject *obj;
    /* Records tagged by a channel with identity on (at any depth) are
     * looked up in this interpreter's identity table first. */
    obj = tps_rebuild_with_identity(rec, state->identity);
    if (obj == NULL) {
        return NULL;
    }
    if (k == KIND_MEM && Py_TYPE(obj) == state->BufferType) {
        /* MemChannel always gives a memoryview. */
        Py_SETREF(obj, PyMemoryView_FromObject(obj));
    }
    return obj;
}

/* Send `obj` (borrowed) through `self`: None, or a Tracker for a
 * MemChannel; NULL on failure with nothing queued.  `unbound`: the
 * TPS_UNBOUND_* asked for this item, 0 for the channel's. */
static PyObject *
do_send(PyObject *self, PyObject *obj, int64_t timeout, int writable,
        unsigned int unbound)
{
    tps_module_state *state = state_of(self);
    kind k = kind_of(self, state);
    PyObject *tracker = NULL;

    tps_interp *st = tps_enter();
    if (st == NULL) {
        return NULL;
    }
    TpShare_Record *rec = make_record(self, k, state, obj, writable,
                                      tps_interp_id(st));
    if (rec == NULL) {
        return NULL;
    }
    rec->flags |= unbound << TPS_REC_UNBOUND_SHIFT;
    if (k == KIND_MEM) {
        tps_tracker *t = tps_tracker_new(st);
        if (t == NULL) {
            goto error;
        }
        rec->tracker = t;   /* the record's reference */
        tracker = tps_tracker_wrap(state, t);
        if (tracker == NULL) {
            goto error;
        }
    }
    int rc = tps_channel_send(((Chan *)self)->ch, &rec, 1, timeout);
    if (rc < 0) {
        raise_for(self, state, rc);
        goto error;
    }
    if (tracker != NULL) {
        return tracker;
    }
    Py_RETURN_NONE;

error:
    /* Nothing was queued: the record (and any export) go now. */
    Py_XDECREF(tracker);
    tps_record_release(rec);
    return NULL;
}

/* Receive one object from `self`.  New reference or NULL. */
static PyObject *
do_recv(PyObject *self, int64_t timeout)
{
    tps_module_state *state = state_of(self);
    TpShare_Record *rec;
    Py_ssize_t got;

    tps_interp *st = tps_enter();
    if (st == NULL || raise_pending(self) < 0) {
        return NULL;
    }
    tps_channel *ch = ((Chan *)self)->ch;
    int rc = tps_channel_recv(ch, &rec, 1, &got, timeout);
    if (rc < 0) {
        return raise_for(self, state, rc);
    }
    assert(got == 1);
    /* The item is consumed whether or not it rebuilds, as with the
     * standard library's queues: one that cannot be rebuilt here raises
     * once, and never blocks those behind it. */
    PyObject *obj = rebuild(kind_of(self, state), state, rec);
    tps_record_queue_release(rec);
    return obj;
}

/* ---------------------------------------------------------------------
 * Channel and MemChannel methods.
 */

static PyObject *
chan_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", NULL};
    static const char *const kwlist[] = {"timeout", "writable",
                                         "unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[3] = {NULL, NULL, NULL};
    int64_t timeout;
    int writable = 0;
    unsigned int unbound;

    if (parse("send", args, nargs, kwnames, 1, 1, posnames, pos, kwlist, kw)
        < 0 || tps_parse_timeout(kw[0], &timeout) < 0
        || parse_unbound(state_of(self), kw[2], 0, &unbound) < 0)
    {
        return NULL;
    }
    if (kw[1] != NULL) {
        if (kind_of(self, state_of(self)) != KIND_MEM) {
            PyErr_SetString(PyExc_TypeError,
                            "writable= is a MemChannel option");
            return NULL;
        }
        if ((writable = PyObject_IsTrue(kw[1])) < 0) {
            return NULL;
        }
    }
    return do_send(self, pos[0], timeout, writable, unbound);
}

static PyObject *
chan_send_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const posnames[] = {"items", NULL};
    static const char *const kwlist[] = {"timeout", "unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[2] = {NULL, NULL};
    tps_module_state *state = state_of(self);
    kind k = kind_of(self, state);
    TpShare_Record **recs = NULL;
    PyObject *seq = NULL;
    Py_ssize_t n = 0, made = 0;
    int64_t timeout;
    unsigned int unbound;

    if (parse("send_many", args, nargs, kwnames, 1, 1, posnames, pos, kwlist,
              kw) < 0 || tps_parse_timeout(kw[0], &timeout) < 0
        || parse_unbound(state, kw[1], 0, &unbound) < 0)
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
    for (made = 0; made < n; made++) {
        recs[made] = make_record(self, k, state, items[made], 0,
                                 tps_interp_id(st));
        if (recs[made] == NULL) {
            goto finally;
        }
        recs[made]->flags |= unbound << TPS_REC_UNBOUND_SHIFT;
    }
    int rc = tps_channel_send(((Chan *)self)->ch, recs, n, timeout);
    if (rc < 0) {
        raise_for(self, state, rc);
        goto finally;
    }
    made = 0;   /* the channel owns them now */

finally:
    for (Py_ssize_t i = 0; i < made; i++) {
        tps_record_release(recs[i]);
    }
    PyMem_RawFree(recs);
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
chan_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const posnames[] = {"timeout", NULL};
    PyObject *pos[1] = {NULL};
    int64_t timeout;

    if (parse("recv", args, nargs, kwnames, 0, 1, posnames, pos, NULL, NULL)
        < 0 || tps_parse_timeout(pos[0], &timeout) < 0)
    {
        return NULL;
    }
    return do_recv(self, timeout);
}

static PyObject *
chan_recv_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const posnames[] = {"max", "timeout", NULL};
    PyObject *pos[2] = {NULL, NULL};
    tps_module_state *state = state_of(self);
    kind k = kind_of(self, state);
    TpShare_Record **recs = NULL;
    PyObject *res = NULL;
    Py_ssize_t got = 0, i = 0;
    int64_t timeout;

    if (parse("recv_many", args, nargs, kwnames, 1, 2, posnames, pos, NULL,
              NULL) < 0 || tps_parse_timeout(pos[1], &timeout) < 0)
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
    if (st == NULL || raise_pending(self) < 0) {
        return NULL;
    }
    if (max > 1 << 16) {
        max = 1 << 16;
    }
    recs = PyMem_RawMalloc((size_t)max * sizeof(TpShare_Record *));
    if (recs == NULL) {
        return PyErr_NoMemory();
    }
    tps_channel *ch = ((Chan *)self)->ch;
    int rc = tps_channel_recv(ch, recs, max, &got, timeout);
    if (rc < 0) {
        raise_for(self, state, rc);
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
        tps_prefetch(recs[i], sizeof(TpShare_Record));
    }
    for (i = 0; i < got; i++) {
        if (i + 2 < got) {
            tps_prefetch(recs[i + 2], sizeof(TpShare_Record));
        }
        if (i + 1 < got && recs[i + 1]->data.ptr != NULL) {
            tps_prefetch(recs[i + 1]->data.ptr, 1);
        }
        PyObject *obj = rebuild(k, state, recs[i]);
        if (obj == NULL) {
            break;
        }
        PyList_SET_ITEM(res, i, obj);
        tps_record_queue_release(recs[i]);
    }
    if (i < got) {
        /* Item i failed to rebuild (its own error, or one that came while
         * it did, such as KeyboardInterrupt): it is consumed, as by recv().
         * The items rebuilt before it are returned and its exception is
         * raised by the next receive on this handle; at once when there
         * are none.  The items behind it were not rebuilt: they go back
         * to the head of the channel (below). */
        assert(PyErr_Occurred());
        tps_record_queue_release(recs[i]);
        if (i > 0) {
            Chan *c = (Chan *)self;
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
            tps_record_queue_release(recs[j]);
        }
    }
    PyMem_RawFree(recs);
    return res;
}

/* ---------------------------------------------------------------------
 * Queue methods: PEP 734's concurrent.interpreters.Queue API.
 */

/* block/timeout as PEP 734 reads them: not blocking means no wait;
 * a negative timeout is a ValueError. */
static int
queue_timeout(PyObject *block, PyObject *timeout, int64_t *ns)
{
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

static PyObject *
queue_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", "block", "timeout", NULL};
    static const char *const kwlist[] = {"unbounditems", NULL};
    PyObject *pos[3] = {NULL, NULL, NULL}, *kw[1] = {NULL};
    int64_t timeout;
    unsigned int unbound;
    if (parse("put", args, nargs, kwnames, 1, 3, posnames, pos, kwlist, kw)
        < 0 || queue_timeout(pos[1], pos[2], &timeout) < 0
        || parse_unbound(state_of(self), kw[0], 0, &unbound) < 0)
    {
        return NULL;
    }
    return do_send(self, pos[0], timeout, 0, unbound);
}

static PyObject *
queue_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const posnames[] = {"block", "timeout", NULL};
    PyObject *pos[2] = {NULL, NULL};
    int64_t timeout;
    if (parse("get", args, nargs, kwnames, 0, 2, posnames, pos, NULL, NULL)
        < 0 || queue_timeout(pos[0], pos[1], &timeout) < 0)
    {
        return NULL;
    }
    return do_recv(self, timeout);
}

static PyObject *
queue_put_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const posnames[] = {"obj", NULL};
    static const char *const kwlist[] = {"unbounditems", NULL};
    PyObject *pos[1] = {NULL}, *kw[1] = {NULL};
    unsigned int unbound;
    if (parse("put_nowait", args, nargs, kwnames, 1, 1, posnames, pos,
              kwlist, kw) < 0
        || parse_unbound(state_of(self), kw[0], 0, &unbound) < 0)
    {
        return NULL;
    }
    return do_send(self, pos[0], 0, 0, unbound);
}

static PyObject *
queue_get_nowait(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return do_recv(self, 0);
}

/* ---------------------------------------------------------------------
 * The rest of the API.
 */

static PyObject *
chan_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    tps_channel_close(((Chan *)self)->ch);
    Py_RETURN_NONE;
}

static PyObject *
chan_qsize(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(tps_channel_count(((Chan *)self)->ch));
}

static Py_ssize_t
chan_len(PyObject *self)
{
    return tps_channel_count(((Chan *)self)->ch);
}

static PyObject *
chan_empty(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(tps_channel_count(((Chan *)self)->ch) == 0);
}

static PyObject *
chan_full(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    tps_channel *ch = ((Chan *)self)->ch;
    Py_ssize_t max = tps_channel_maxsize(ch);
    return PyBool_FromLong(max > 0 && tps_channel_count(ch) >= max);
}

static PyObject *
chan_stats(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t c[5];
    tps_channel_counters(((Chan *)self)->ch, c);
    return Py_BuildValue("{sKsKsKsnsKsK}", "sent", (unsigned long long)c[0],
                         "received", (unsigned long long)c[1],
                         "dropped", (unsigned long long)c[2], "queued",
                         tps_channel_count(((Chan *)self)->ch),
                         "sends_parked", (unsigned long long)c[3],
                         "recvs_parked", (unsigned long long)c[4]);
}

static PyObject *
chan_get_id(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(tps_channel_id(((Chan *)self)->ch));
}

static PyObject *
chan_get_maxsize(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(tps_channel_maxsize(((Chan *)self)->ch));
}

/* self: borrowed.  New reference to the interpreter's own marker. */
static PyObject *
chan_get_unbounditems(PyObject *self, void *Py_UNUSED(closure))
{
    unsigned int policy = (tps_channel_flags(((Chan *)self)->ch)
                           & TPS_CHAN_UNBOUND_MASK) >> TPS_CHAN_UNBOUND_SHIFT;
    assert(policy >= TPS_UNBOUND_MARK && policy <= TPS_UNBOUND_REMOVE);
    return Py_NewRef(state_of(self)->unbound[policy - 1]);
}

static PyObject *
chan_get_closed(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(tps_channel_is_closed(((Chan *)self)->ch));
}

static PyObject *
chan_repr(PyObject *self)
{
    tps_channel *ch = ((Chan *)self)->ch;
    return PyUnicode_FromFormat("<%s id=%lld maxsize=%zd queued=%zd%s>",
                                Py_TYPE(self)->tp_name,
                                (long long)tps_channel_id(ch),
                                tps_channel_maxsize(ch),
                                tps_channel_count(ch),
                                tps_channel_is_closed(ch) ? " closed" : "");
}

static Py_hash_t
chan_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)tps_channel_id(((Chan *)self)->ch);
    return h == -1 ? -2 : h;
}

static PyObject *
chan_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(other) != Py_TYPE(self)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int eq = ((Chan *)self)->ch == ((Chan *)other)->ch;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyMethodDef chan_methods[] = {
    {"send", _PyCFunction_CAST(chan_send), METH_FASTCALL | METH_KEYWORDS,
     "send(obj, *, timeout=None, unbounditems=None)\n--\n\nQueue obj, "
     "waiting up to timeout seconds for room (ChannelFull then); "
     "ChannelClosed once closed.  unbounditems overrides the channel's "
     "for this item."},
    {"recv", _PyCFunction_CAST(chan_recv), METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None)\n--\n\nTake the next item, waiting up to timeout "
     "seconds (ChannelEmpty then); ChannelClosed once closed and empty.  "
     "An item that cannot be rebuilt is consumed and raises once."},
    {"send_many", _PyCFunction_CAST(chan_send_many),
     METH_FASTCALL | METH_KEYWORDS,
     "send_many(items, *, timeout=None, unbounditems=None)\n--\n\n"
     "Queue every item of an iterable under one lock, all or nothing."},
    {"recv_many", _PyCFunction_CAST(chan_recv_many),
     METH_FASTCALL | METH_KEYWORDS,
     "recv_many(max, timeout=None)\n--\n\nTake 1 to max items at once, "
     "waiting for the first; a list.  An item that cannot be rebuilt is "
     "consumed and ends the list; its error is raised at once if it came "
     "first, else by the next receive on this handle."},
    {"close", chan_close, METH_NOARGS,
     "close()\n--\n\nClose the channel: wake every waiter; queued items "
     "can still be received."},
    {"qsize", chan_qsize, METH_NOARGS, "Number of queued items."},
    {"empty", chan_empty, METH_NOARGS, "True if no item is queued."},
    {"full", chan_full, METH_NOARGS, "True if a bounded channel is full."},
    {"stats", chan_stats, METH_NOARGS,
     "Counters: sent, received, dropped, queued."},
    {"from_id", chan_from_id, METH_O | METH_CLASS,
     "from_id(id)\n--\n\nA new handle on the live channel with this id."},
    {NULL},
};

static PyGetSetDef chan_getset[] = {
    {"id", chan_get_id, NULL, "Process-wide ID of the channel.", NULL},
    {"maxsize", chan_get_maxsize, NULL, "Capacity (0: unbounded).", NULL},
    {"closed", chan_get_closed, NULL, "True once close() was called.",
     NULL},
    {"unbounditems", chan_get_unbounditems, NULL,
     "What is delivered for an item whose sender ended before it was "
     "received and that could not be copied.", NULL},
    {NULL},
};

static PyMethodDef queue_methods[] = {
    {"put", _PyCFunction_CAST(queue_put), METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None, *, unbounditems=None)\n--\n\n"
     "Add obj, waiting up to timeout seconds for room (QueueFull then)."},
    {"get", _PyCFunction_CAST(queue_get), METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None)\n--\n\nRemove and return the next "
     "object, waiting up to timeout seconds (QueueEmpty then)."},
    {"put_nowait", _PyCFunction_CAST(queue_put_nowait),
     METH_FASTCALL | METH_KEYWORDS,
     "put_nowait(obj, *, unbounditems=None)\n--\n\n"
     "put(obj, block=False)."},
    {"get_nowait", queue_get_nowait, METH_NOARGS,
     "get_nowait()\n--\n\nget(block=False)."},
    {"qsize", chan_qsize, METH_NOARGS, "Number of queued objects."},
    {"empty", chan_empty, METH_NOARGS, "True if nothing is queued."},
    {"full", chan_full, METH_NOARGS, "True if a bounded queue is full."},
    {"from_id", chan_from_id, METH_O | METH_CLASS,
     "from_id(id)\n--\n\nA new handle on the live queue with this id."},
    {NULL},
};

static PyGetSetDef queue_getset[] = {
    {"id", chan_get_id, NULL, "Process-wide ID of the queue.", NULL},
    {"maxsize", chan_get_maxsize, NULL, "Capacity (0: unbounded).", NULL},
    {"unbounditems", chan_get_unbounditems, NULL,
     "What is delivered for an object whose sender ended before it was "
     "taken and that could not be copied.", NULL},
    {NULL},
};

#define HANDLE_SLOTS(METHODS, GETSET, DOC)                \
    {Py_tp_new, chan_new},                                \
    {Py_tp_dealloc, chan_dealloc},                        \
    {Py_tp_finalize, chan_finalize},                      \
    {Py_tp_traverse, chan_traverse},                      \
    {Py_tp_clear, chan_clear},                            \
    {Py_tp_repr, chan_repr},                              \
    {Py_tp_hash, chan_hash},                              \
    {Py_tp_richcompare, chan_richcompare},                \
    {Py_tp_methods, METHODS},                             \
    {Py_tp_getset, GETSET},                               \
    {Py_sq_length, chan_len},                             \
    {Py_tp_doc, DOC},                                     \
    {0, NULL}

static PyType_Slot channel_slots[] = {HANDLE_SLOTS(
    chan_methods, chan_getset,
    "Channel(maxsize=0, *, spin=None, identity=False, fallback=None,\n"
    "        unbounditems=None)\n--\n"
    "\nA FIFO of shareable objects between interpreters.  unbounditems "
    "(None: tpshare.UNBOUND) says what is received for an item whose "
    "sender ended before it was received and that could not be copied.")};

static PyType_Slot memchannel_slots[] = {HANDLE_SLOTS(
    chan_methods, chan_getset,
    "MemChannel(maxsize=0, *, spin=None, unbounditems=None)\n--\n\n"
    "A FIFO of buffers between interpreters, zero-copy: recv() returns a "
    "memoryview of the sender's memory; send() returns a Tracker.  "
    "unbounditems (None: tpshare.UNBOUND) says what is received for an "
    "item whose sender ended before it was received.")};

static PyType_Slot queue_slots[] = {HANDLE_SLOTS(
    queue_methods, queue_getset,
    "Queue(maxsize=0, *, spin=None, identity=False, fallback='pickle',\n"
    "      unbounditems=None)\n"
    "--\n\nThe API of PEP 734's concurrent.interpreters.Queue on the "
    "Object Channel, with real blocking and float timeouts; unbounditems\n"
    "(None: tpshare.UNBOUND) as in PEP 734.")};

static PyType_Spec channel_spec = {
    .name = "tpshare.Channel",
    .basicsize = sizeof(Chan),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = channel_slots,
};

static PyType_Spec memchannel_spec = {
    .name = "tpshare.MemChannel",
    .basicsize = sizeof(Chan),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = memchannel_slots,
};

static PyType_Spec queue_spec = {
    .name = "tpshare.Queue",
    .basicsize = sizeof(Chan),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = queue_slots,
};

/* ---------------------------------------------------------------------
 * Sharing handles: the record holds the channel, neutral.
 */

static int
handle_share(PyObject *obj, TpShare_Data *data)
{
    tps_channel *ch = ((Chan *)obj)->ch;
    tps_channel_incref(ch);
    data->ptr = ch;
    return 0;
}

static PyObject *
handle_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    tps_channel *ch = data->ptr;
    tps_channel_incref(ch);
    return wrap(type, ch);
}

static void
handle_free(TpShare_Data *data)
{
    tps_channel_decref(data->ptr);
}

static const TpShare_Hooks channel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Channel",
    handle_share, handle_rebuild, handle_free,
};

static const TpShare_Hooks memchannel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.MemChannel",
    handle_share, handle_rebuild, handle_free,
};

static const TpShare_Hooks queue_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Queue",
    handle_share, handle_rebuild, handle_free,
};

static PyTypeObject *
make_type(PyObject *module, PyType_Spec *spec, const TpShare_Hooks *hooks)
{
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, spec, NULL);
    if (type == NULL) {
        return NULL;
    }
    if (PyModule_AddType(module, type) < 0
        || tps_registry_register(type, hooks, 0) < 0)
    {
        Py_DECREF(type);
        return NULL;
    }
    return type;
}

int
tps_channel_init_types(PyObject *module, tps_module_state *state)
{
    if (init_unbound(module, state) < 0) {
        return -1;
    }
    state->ChannelType = make_type(module, &channel_spec, &channel_hooks);
    if (state->ChannelType == NULL) {
        return -1;
    }
    state->MemChannelType = make_type(module, &memchannel_spec,
                                      &memchannel_hooks);
    if (state->MemChannelType == NULL) {
        return -1;
    }
    state->QueueType = make_type(module, &queue_spec, &queue_hooks);
    return state->QueueType == NULL ? -1 : 0;
}
