/* module.c - the tpshare._tpshare extension module.
 *
 * Multi-phase initialization (PEP 489) with module state, importable in
 * isolated subinterpreters with their own GIL (PEP 684).  The first exec
 * in the process sets up the registry and its built-in handlers; every
 * exec makes the interpreter's own exception classes and heap types and
 * binds the interpreter's tps_interp state to this module.
 *
 * It also publishes the C API table (TpShare_CAPI, capi.c) as the capsule
 * that tpshare/__init__.py exposes as tpshare._C_API.  The module's
 * functions are in functions.c.
 */
#include "module.h"
#include "cpython_xid.h"
#include "workers.h"

/* ---------------------------------------------------------------------
 * Module life cycle.
 */

/* Make the error class tpshare.<name>, a subclass of `base` (borrowed)
 * and, when queue_base is given, of queue.<queue_base>; store it (new
 * reference) in *slot and add it to the module.  0 or -1. */
static int
add_error(PyObject *module, PyObject **slot, const char *name,
          const char *doc, PyObject *base, const char *queue_base)
{
    PyObject *bases = NULL, *extra = NULL, *queue = NULL;
    char qualname[64];
    int rc = -1;

    if (queue_base != NULL) {
        queue = PyImport_ImportModule("queue");
        if (queue == NULL) {
            goto finally;
        }
        extra = PyObject_GetAttrString(queue, queue_base);
        if (extra == NULL) {
            goto finally;
        }
        bases = PyTuple_Pack(2, base, extra);
    }
    else {
        bases = PyTuple_Pack(1, base);
    }
    if (bases == NULL) {
        goto finally;
    }
    PyOS_snprintf(qualname, sizeof(qualname), "tpshare.%s", name);
    *slot = PyErr_NewExceptionWithDoc(qualname, doc, bases, NULL);
    if (*slot == NULL || PyModule_AddObjectRef(module, name, *slot) < 0) {
        goto finally;
    }
    rc = 0;
finally:
    Py_XDECREF(queue);
    Py_XDECREF(extra);
    Py_XDECREF(bases);
    return rc;
}

/* The bases of tpshare.NotShareableError (a new reference, or NULL with
 * an exception): tpshare.Error and TypeError, plus the running CPython's
 * own NotShareableError when it has one (3.13's _interpreters), so that
 * code written against CPython's interpreters catches tpshare's error
 * too.  Found by import, not by version: a CPython without the module
 * (3.12, or one built without subinterpreter support) just lacks it. */
static PyObject *
not_shareable_bases(PyObject *error)
{
    PyObject *cpython = NULL;
    PyObject *mod = PyImport_ImportModule("_interpreters");
    if (mod == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_ImportError)) {
            return NULL;
        }
        PyErr_Clear();
    }
    else {
        cpython = PyObject_GetAttrString(mod, "NotShareableError");
        Py_DECREF(mod);
        if (cpython == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return NULL;
            }
            PyErr_Clear();
        }
        else if (!PyExceptionClass_Check(cpython)) {
            Py_CLEAR(cpython);
        }
    }
    PyObject *bases;
    if (cpython == NULL) {
        bases = PyTuple_Pack(2, error, PyExc_TypeError);
    }
    else {
        bases = PyTuple_Pack(3, error, PyExc_TypeError, cpython);
        Py_DECREF(cpython);
    }
    return bases;
}

static int
module_exec(PyObject *module)
{
    tps_module_state *state = tps_module_state_of(module);
    PyObject *bases = NULL, *capsule = NULL;
    int rc = -1;

    if (tps_registry_init_with(tps_builtin_handlers_register) < 0) {
        goto finally;
    }
    state->Error = PyErr_NewExceptionWithDoc(
        "tpshare.Error", "Base class of tpshare's errors.", NULL, NULL);
    if (state->Error == NULL
        || PyModule_AddObjectRef(module, "Error", state->Error) < 0)
    {
        goto finally;
    }
    bases = not_shareable_bases(state->Error);
    if (bases == NULL) {
        goto finally;
    }
    state->NotShareableError = PyErr_NewExceptionWithDoc(
        "tpshare.NotShareableError",
        "The object, or something inside it, cannot be shared.", bases,
        NULL);
    if (state->NotShareableError == NULL
        || PyModule_AddObjectRef(module, "NotShareableError",
                                 state->NotShareableError) < 0)
    {
        goto finally;
    }
    if (add_error(module, &state->ChannelClosed, "ChannelClosed",
                  "The channel is closed (and, for recv, empty).",
                  state->Error, NULL) < 0
        || add_error(module, &state->ChannelEmpty, "ChannelEmpty",
                     "recv timed out: no item.", state->Error, "Empty") < 0
        || add_error(module, &state->ChannelFull, "ChannelFull",
                     "send timed out: no room.", state->Error, "Full") < 0
        || add_error(module, &state->QueueEmpty, "QueueEmpty",
                     "Queue.get found no object in time.",
                     state->ChannelEmpty, NULL) < 0
        || add_error(module, &state->QueueFull, "QueueFull",
                     "Queue.put found no room in time.",
                     state->ChannelFull, NULL) < 0)
    {
        goto finally;
    }
    state->identity = tps_identity_new();
    if (state->identity == NULL) {
        goto finally;
    }
    if (tps_shared_init_type(module, state) < 0
        || tps_view_init_type(module, state) < 0
        || tps_tracker_init_type(module, state) < 0
        || tps_buffer_init_type(module, state) < 0
        || tps_channel_init_types(module, state) < 0
        || tps_xid_register_types(state) < 0
        || tps_interpreters_init(module) < 0
        || tps_fork_init(module) < 0
        || tps_crossproc_init(module) < 0)
    {
        goto finally;
    }
    if (tps_interp_add_exit_callback(tps_tokens_forget_interp) < 0
        || tps_interp_add_exit_callback(tps_channels_forget_interp) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "too many exit callbacks");
        goto finally;
    }
    capsule = PyCapsule_New((void *)&tps_capi, TPSHARE_CAPSULE_NAME, NULL);
    if (capsule == NULL
        || PyModule_AddObjectRef(module, "_C_API", capsule) < 0
        || PyModule_AddIntConstant(module, "ABI_VERSION",
                                   TPSHARE_ABI_VERSION) < 0
        || PyModule_AddStringConstant(module, "_EXIT_INTERRUPT_MESSAGE",
                                      TPS_EXIT_INTERRUPT_MESSAGE) < 0)
    {
        goto finally;
    }
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        goto finally;
    }
    tps_interp_set_module(st, module);
    rc = 0;
finally:
    Py_XDECREF(capsule);
    Py_XDECREF(bases);
    return rc;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    tps_module_state *state = tps_module_state_of(module);
    Py_VISIT(state->Error);
    Py_VISIT(state->NotShareableError);
    Py_VISIT(state->ChannelClosed);
    Py_VISIT(state->ChannelEmpty);
    Py_VISIT(state->ChannelFull);
    Py_VISIT(state->QueueType);
    Py_VISIT(state->QueueFull);
    Py_VISIT(state->QueueEmpty);
    Py_VISIT(state->SharedType);
    Py_VISIT(state->ViewType);
    Py_VISIT(state->TrackerType);
    Py_VISIT(state->ChannelType);
    Py_VISIT(state->MemChannelType);
    Py_VISIT(state->BufferType);
    Py_VISIT(state->ItemInterpreterDestroyed);
    for (int i = 0; i < 3; i++) {
        Py_VISIT(state->unbound[i]);
    }
    Py_VISIT(state->UnboundType);
    return 0;
}

static int
module_clear(PyObject *module)
{
    tps_module_state *state = tps_module_state_of(module);
    Py_CLEAR(state->Error);
    Py_CLEAR(state->NotShareableError);
    Py_CLEAR(state->ChannelClosed);
    Py_CLEAR(state->ChannelEmpty);
    Py_CLEAR(state->ChannelFull);
    Py_CLEAR(state->QueueType);
    Py_CLEAR(state->QueueFull);
    Py_CLEAR(state->QueueEmpty);
    Py_CLEAR(state->SharedType);
    Py_CLEAR(state->ViewType);
    Py_CLEAR(state->TrackerType);
    Py_CLEAR(state->ChannelType);
    Py_CLEAR(state->MemChannelType);
    Py_CLEAR(state->BufferType);
    Py_CLEAR(state->ItemInterpreterDestroyed);
    for (int i = 0; i < 3; i++) {
        Py_CLEAR(state->unbound[i]);
    }
    Py_CLEAR(state->UnboundType);
    return 0;
}

static void
module_free(void *module)
{
    tps_module_state *state = tps_module_state_of((PyObject *)module);
    module_clear((PyObject *)module);
    for (int i = 0; i < 3; i++) {
        ptrmap_clear(&state->handle_cache[i]);
    }
    ptrmap_clear(&state->buffer_cache);
    tps_identity_free(state->identity);
    state->identity = NULL;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    TPS_MOD_GIL_SLOT
    {0, NULL},
};

static struct PyModuleDef tpshare_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "tpshare._tpshare",
    .m_doc = "The C core of tpshare: share records, the type registry, "
             "release in the owner interpreter.",
    .m_size = sizeof(tps_module_state),
    .m_methods = tps_module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__tpshare(void)
{
    return PyModuleDef_Init(&tpshare_module);
}
