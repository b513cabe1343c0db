/* channel.c - the handle types tpshare.Channel (the Object Channel),
 * tpshare.MemChannel and tpshare.Queue (PEP 734's Queue API on the Object
 * Channel): creation, lifetime, the methods that only read the channel,
 * the method tables and the type objects.
 *
 * All three are handles on one channel of the core (chancore.c); they
 * differ only in what they put in it.  MemChannel.send() accepts buffer
 * exporters only and shares them zero-copy with the buffer handler,
 * returning a Tracker; Channel.send() shares any shareable object through
 * the registry.  Receiving is the same code for both: take a record,
 * rebuild it (a memoryview for a buffer), release the record.  So the
 * difference between the two designs is the object layer (objlayer.c)
 * alone.  The send and receive methods are in handle_io.c.
 *
 * Handles are shareable (handle_share.c): a handle's record holds a
 * reference to the channel and rebuilds as a handle of the receiving
 * interpreter's own class; a channel lives while any handle or record
 * holds it.
 *
 * Items whose sender exited before they were received (chancore.c) are
 * delivered as neutral copies when their value cannot change; the others
 * follow PEP 734's unbounditems policy, per channel or per send
 * (unbound.c): tpshare.UNBOUND is received in their place, or their recv
 * raises ItemInterpreterDestroyed (UNBOUND_ERROR: the item is consumed),
 * or they are removed (UNBOUND_REMOVE).
 */
#include "channel.h"

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

/* ---------------------------------------------------------------------
 * Creating handles.
 */

/* The interpreter's table of live handles of `type`'s kind. */
static ptrmap *
handle_cache_of(tps_module_state *state, PyTypeObject *type)
{
    tps_kind k = type == state->MemChannelType ? TPS_KIND_MEM
                 : type == state->QueueType ? TPS_KIND_QUEUE
                 : TPS_KIND_CHANNEL;
    return &state->handle_cache[k];
}

/* Taking over the caller's reference to `ch` (see channel.h). */
PyObject *
tps_handle_wrap(PyTypeObject *type, tps_channel *ch)
{
    /* Tracked by the collector: a pending exception's traceback may lead
     * back to the handle. */
    tps_handle *self = PyObject_GC_New(tps_handle, type);
    if (self == NULL) {
        tps_channel_decref(ch);
        return NULL;
    }
    self->ch = ch;
    self->pending = NULL;
    self->many_hint = 0;
    tps_module_state *state = PyType_GetModuleState(type);
    self->kind = (int)tps_handle_kind((PyObject *)self, state);
    /* The first live handle of a channel is the one a handle coming back
     * by id resolves to.  Without memory for the entry, it just is not
     * found: identity is lost, nothing else. */
    ptrmap *cache = handle_cache_of(state, type);
    int found;
    (void)ptrmap_get(cache, ch, &found);
    if (!found) {
        (void)ptrmap_set(cache, ch, self);
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* Taking over the caller's reference to `ch` (see channel.h). */
PyObject *
tps_handle_get(tps_module_state *state, tps_kind k, tps_channel *ch)
{
    int found;
    PyObject *cached = ptrmap_get(&state->handle_cache[k], ch, &found);
    if (found) {
        tps_channel_decref(ch);
        return Py_NewRef(cached);
    }
    PyTypeObject *type = k == TPS_KIND_MEM ? state->MemChannelType
                         : k == TPS_KIND_QUEUE ? state->QueueType
                         : state->ChannelType;
    return tps_handle_wrap(type, ch);
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
    if (tps_parse_unbound(state, unbound_arg, TPS_UNBOUND_MARK, &unbound)
        < 0)
    {
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
    return tps_handle_wrap(type, ch);
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
    return tps_handle_wrap((PyTypeObject *)cls, ch);
}

/* A handle that dies with an exception still pending reports it (an item
 * was consumed and its error never seen otherwise). */
static void
chan_finalize(PyObject *op)
{
    tps_handle *self = (tps_handle *)op;
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
    Py_VISIT(((tps_handle *)op)->pending);
    return 0;
}

static int
chan_clear(PyObject *op)
{
    Py_CLEAR(((tps_handle *)op)->pending);
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
    /* Every table is checked: while the module is cleared, its type
     * slots no longer tell the kinds apart. */
    tps_channel *ch = ((tps_handle *)op)->ch;
    tps_module_state *state = PyType_GetModuleState(tp);
    for (int k = 0; k < 3; k++) {
        int found;
        if (ptrmap_get(&state->handle_cache[k], ch, &found) == op) {
            ptrmap_del(&state->handle_cache[k], ch);
        }
    }
    tps_channel_decref(ch);
    PyObject_GC_Del(op);
    Py_DECREF(tp);
}

/* Raise the exception left by an earlier recv_many() on this handle, if
 * any: returns -1 then, else 0. */
int
tps_handle_raise_pending(PyObject *self)
{
    tps_handle *c = (tps_handle *)self;
    if (c->pending == NULL) {
        return 0;
    }
    PyObject *exc = c->pending;
    c->pending = NULL;
    PyErr_SetRaisedException(exc);   /* steals it */
    return -1;
}

/* Raise for a TPS_ERR_* code; Queue handles raise QueueEmpty/QueueFull. */
PyObject *
tps_handle_raise(PyObject *self, tps_module_state *state, int code)
{
    if (tps_handle_kind(self, state) == TPS_KIND_QUEUE) {
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
 * The rest of the API.
 */

static PyObject *
chan_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    tps_channel_close(((tps_handle *)self)->ch);
    Py_RETURN_NONE;
}

static PyObject *
chan_qsize(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(tps_channel_count(((tps_handle *)self)->ch));
}

static Py_ssize_t
chan_len(PyObject *self)
{
    return tps_channel_count(((tps_handle *)self)->ch);
}

static PyObject *
chan_empty(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(tps_channel_count(((tps_handle *)self)->ch) == 0);
}

static PyObject *
chan_full(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    tps_channel *ch = ((tps_handle *)self)->ch;
    Py_ssize_t max = tps_channel_maxsize(ch);
    return PyBool_FromLong(max > 0 && tps_channel_count(ch) >= max);
}

static PyObject *
chan_stats(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t c[5];
    tps_channel_counters(((tps_handle *)self)->ch, c);
    return Py_BuildValue("{sKsKsKsnsKsK}", "sent", (unsigned long long)c[0],
                         "received", (unsigned long long)c[1],
                         "dropped", (unsigned long long)c[2], "queued",
                         tps_channel_count(((tps_handle *)self)->ch),
                         "sends_parked", (unsigned long long)c[3],
                         "recvs_parked", (unsigned long long)c[4]);
}

static PyObject *
chan_get_id(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(tps_channel_id(((tps_handle *)self)->ch));
}

static PyObject *
chan_get_maxsize(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(tps_channel_maxsize(((tps_handle *)self)->ch));
}

/* self: borrowed.  New reference to the interpreter's own marker. */
static PyObject *
chan_get_unbounditems(PyObject *self, void *Py_UNUSED(closure))
{
    unsigned int policy = (tps_channel_flags(((tps_handle *)self)->ch)
                           & TPS_CHAN_UNBOUND_MASK) >> TPS_CHAN_UNBOUND_SHIFT;
    assert(policy >= TPS_UNBOUND_MARK && policy <= TPS_UNBOUND_REMOVE);
    return Py_NewRef(tps_handle_state(self)->unbound[policy - 1]);
}

static PyObject *
chan_get_closed(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(tps_channel_is_closed(((tps_handle *)self)->ch));
}

static PyObject *
chan_repr(PyObject *self)
{
    tps_channel *ch = ((tps_handle *)self)->ch;
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
    Py_hash_t h = (Py_hash_t)tps_channel_id(((tps_handle *)self)->ch);
    return h == -1 ? -2 : h;
}

static PyObject *
chan_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(other) != Py_TYPE(self)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int eq = ((tps_handle *)self)->ch == ((tps_handle *)other)->ch;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyMethodDef chan_methods[] = {
    {"send", _PyCFunction_CAST(tps_chan_send), METH_FASTCALL | METH_KEYWORDS,
     "send(obj, *, timeout=None, unbounditems=None)\n--\n\nQueue obj, "
     "waiting up to timeout seconds for room (ChannelFull then); "
     "ChannelClosed once closed.  unbounditems overrides the channel's "
     "for this item."},
    {"recv", _PyCFunction_CAST(tps_chan_recv), METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None)\n--\n\nTake the next item, waiting up to timeout "
     "seconds (ChannelEmpty then); ChannelClosed once closed and empty.  "
     "An item that cannot be rebuilt is consumed and raises once."},
    {"send_many", _PyCFunction_CAST(tps_chan_send_many),
     METH_FASTCALL | METH_KEYWORDS,
     "send_many(items, *, timeout=None, unbounditems=None)\n--\n\n"
     "Queue every item of an iterable under one lock, all or nothing."},
    {"recv_many", _PyCFunction_CAST(tps_chan_recv_many),
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
    {"__reduce__", tps_handle_reduce, METH_NOARGS,
     "Pickled by id: unpickles in this process only."},
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
    {"put", _PyCFunction_CAST(tps_queue_put), METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None, *, unbounditems=None)\n--\n\n"
     "Add obj, waiting up to timeout seconds for room (QueueFull then)."},
    {"get", _PyCFunction_CAST(tps_queue_get), METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None)\n--\n\nRemove and return the next "
     "object, waiting up to timeout seconds (QueueEmpty then)."},
    {"put_nowait", _PyCFunction_CAST(tps_queue_put_nowait),
     METH_FASTCALL | METH_KEYWORDS,
     "put_nowait(obj, *, unbounditems=None)\n--\n\n"
     "put(obj, block=False)."},
    {"get_nowait", tps_queue_get_nowait, METH_NOARGS,
     "get_nowait()\n--\n\nget(block=False)."},
    {"qsize", chan_qsize, METH_NOARGS, "Number of queued objects."},
    {"empty", chan_empty, METH_NOARGS, "True if nothing is queued."},
    {"full", chan_full, METH_NOARGS, "True if a bounded queue is full."},
    {"from_id", chan_from_id, METH_O | METH_CLASS,
     "from_id(id)\n--\n\nA new handle on the live queue with this id."},
    {"__reduce__", tps_handle_reduce, METH_NOARGS,
     "Pickled by id: unpickles in this process only."},
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
    .basicsize = sizeof(tps_handle),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = channel_slots,
};

static PyType_Spec memchannel_spec = {
    .name = "tpshare.MemChannel",
    .basicsize = sizeof(tps_handle),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = memchannel_slots,
};

static PyType_Spec queue_spec = {
    .name = "tpshare.Queue",
    .basicsize = sizeof(tps_handle),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
              | Py_TPFLAGS_HAVE_GC),
    .slots = queue_slots,
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
    if (tps_unbound_init(module, state) < 0) {
        return -1;
    }
    state->ChannelType = make_type(module, &channel_spec, &tps_channel_hooks);
    if (state->ChannelType == NULL) {
        return -1;
    }
    state->MemChannelType = make_type(module, &memchannel_spec,
                                      &tps_memchannel_hooks);
    if (state->MemChannelType == NULL) {
        return -1;
    }
    state->QueueType = make_type(module, &queue_spec, &tps_queue_hooks);
    if (state->QueueType == NULL) {
        return -1;
    }
    return tps_handle_pickle_init(module);
}
