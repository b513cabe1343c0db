/* unbound.c - items whose sender ended before they were received
 * (PEP 734's unbounditems).  The exit hook of an interpreter (chanexit.c)
 * puts a neutral marker record, made here through the maker this file
 * installs, in place of each item it could not copy;
 * this file holds those markers' registration, the tpshare.UNBOUND,
 * UNBOUND_ERROR and UNBOUND_REMOVE objects of each interpreter, the
 * ItemInterpreterDestroyed exception and the parsing of unbounditems=
 * arguments for the handles (channel.c, handle_io.c).
 */
#include "channel.h"

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
int
tps_parse_unbound(tps_module_state *state, PyObject *arg, unsigned int none,
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

/* A neutral record standing for an item that could not be delivered
 * (policy TPS_UNBOUND_MARK or TPS_UNBOUND_ERROR): it rebuilds as
 * tpshare.UNBOUND or raises ItemInterpreterDestroyed.  New reference, or
 * NULL with an exception.  Needs a GIL.  The channel core's unbound
 * maker (chanexit.c). */
static TpShare_Record *
unbound_marker(unsigned int policy)
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
 * interpreter's module (borrowed), held by `state` and the module, and
 * install the channel core's maker of marker records.  0 or -1 with an
 * exception. */
int
tps_unbound_init(PyObject *module, tps_module_state *state)
{
    tps_channels_set_unbound_maker(unbound_marker);
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
