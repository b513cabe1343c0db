/* functions.c - the functions of the tpshare._tpshare module: share,
 * attach, is_shareable, registered, stats, drain, origin_id,
 * interpreter_id, and the private diagnostics the tests read (counters
 * of blocks and memo tables, the spin window).  module.c puts the table
 * (tps_module_methods) in the module definition.
 */
#include "module.h"
#include "cpython_xid.h"
#include "waiter.h"

/* ---------------------------------------------------------------------
 * Module functions.  As every METH_* function: arguments are borrowed,
 * the result is a new reference (NULL with an exception on failure).
 */

PyDoc_STRVAR(share_doc,
"share(obj, /)\n--\n\n"
"Share obj out of the current interpreter: return a tpshare.Shared\n"
"holding an interpreter-neutral record of it.  Raises NotShareableError\n"
"(a TypeError) naming the type and its position when obj, or something\n"
"inside it, cannot be shared.");

static PyObject *
mod_share(PyObject *module, PyObject *obj)
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    TpShare_Record *rec = tps_share(obj);
    if (rec == NULL) {
        return NULL;
    }
    return tps_shared_new(tps_module_state_of(module), rec);
}

PyDoc_STRVAR(attach_doc,
"attach(token, /)\n--\n\n"
"Take the record detached under token (by Shared.detach(), in any\n"
"interpreter) and return it as a Shared of the current interpreter.\n"
"Each token can be attached once; KeyError otherwise.");

static PyObject *
mod_attach(PyObject *module, PyObject *arg)
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    long long token = PyLong_AsLongLong(arg);
    if (token == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return tps_attach(tps_module_state_of(module), token);
}

PyDoc_STRVAR(is_shareable_doc,
"is_shareable(obj, /)\n--\n\n"
"True if obj can be shared, checked deeply: a tuple holding a list is\n"
"not shareable.");

static PyObject *
mod_is_shareable(PyObject *Py_UNUSED(module), PyObject *obj)
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    int rc = tps_is_shareable(obj);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

PyDoc_STRVAR(registered_doc,
"registered()\n--\n\n"
"The registrations visible in the current interpreter, as a sorted list\n"
"of (name, type, flags) tuples; flags is a tuple of names.  The buffer\n"
"fallback, and a static type that is not immortal (shared by every\n"
"interpreter, so not handed out), have type None.");

static PyObject *
mod_registered(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    return tps_registry_list();
}

PyDoc_STRVAR(stats_doc,
"stats()\n--\n\n"
"Counters per interpreter ID: 'exports' (owner-bound records alive),\n"
"'remote' (holders of them in other interpreters), 'pending' (releases\n"
"queued for the owner to run).");

static PyObject *
mod_stats(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    return tps_interp_stats();
}

PyDoc_STRVAR(drain_doc,
"drain()\n--\n\n"
"Run the releases queued for the current interpreter now.  Any call\n"
"into tpshare does this too; this one does nothing else.");

static PyObject *
mod_drain(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(origin_id_doc,
"origin_id(obj, /)\n--\n\n"
"The sender's id() of obj, an object received through a Channel or\n"
"Queue in this interpreter while identity is tracked for it; None if\n"
"it is not known (not received, or a mutable value).");

static PyObject *
mod_origin_id(PyObject *module, PyObject *obj)
{
    tps_module_state *state = tps_module_state_of(module);
    Py_ssize_t origin = tps_identity_origin(state->identity, obj);
    if (origin == -1) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSize_t((size_t)origin);
}

PyDoc_STRVAR(process_exiting_doc,
"_process_exiting()\n--\n\n"
"Tell tpshare the process is exiting: interpreters ended from now on do\n"
"not wait for views of their memory held elsewhere (that memory stays\n"
"allocated until the process ends).  Called by tpshare's own exit hook.");

static PyObject *
mod_process_exiting(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    tps_interp_process_exiting();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(block_counts_doc,
"_block_counts()\n--\n\n(two, three): blocks of two and three cache lines "
"(records, small\ncopies) taken from memory and not given back, in use or "
"cached (for tests).");

static PyObject *
mod_block_counts(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    long long two, three;
    tps_block_counts(&two, &three);
    return Py_BuildValue("(LL)", two, three);
}

PyDoc_STRVAR(block_cached_doc,
"_block_cached()\n--\n\n(two, three): of _block_counts(), the blocks cached "
"for reuse in the\nprocess-wide depots and the calling thread's magazines "
"(for tests:\nthe difference is in use, or cached by other threads).");

static PyObject *
mod_block_cached(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    long long two, three;
    tps_block_cached(&two, &three);
    return Py_BuildValue("(LL)", two, three);
}

PyDoc_STRVAR(copy_block_counts_doc,
"_copy_block_counts()\n--\n\n(live, cached): blocks of the copy classes "
"(copies of 129 bytes to\n16 KiB) taken from memory and not given back, "
"and of those the ones\ncached as _block_cached() counts (for tests).");

static PyObject *
mod_copy_block_counts(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    long long live, cached;
    tps_block_copy_counts(&live, &cached);
    return Py_BuildValue("(LL)", live, cached);
}

PyDoc_STRVAR(small_block_counts_doc,
"_small_block_counts()\n--\n\n(live, cached): blocks of the small classes "
"(compact blocks of\nqueued immediate items) taken from memory and not "
"given back, and of\nthose the ones cached as _block_cached() counts "
"(for tests).");

static PyObject *
mod_small_block_counts(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    long long live, cached;
    tps_block_small_counts(&live, &cached);
    return Py_BuildValue("(LL)", live, cached);
}

PyDoc_STRVAR(memo_tables_doc,
"_memo_tables()\n--\n\nThe tables of the per-thread identity memos "
"(of sharing and\nrebuilding nested values) allocated in the process and "
"not yet\nfreed (for tests).");

static PyObject *
mod_memo_tables(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    return PyLong_FromLong(tps_memo_tables());
}

PyDoc_STRVAR(spin_window_doc,
"_spin_window()\n--\n\nThe calling thread's adaptive spin window in ns: "
"how long its next\nwait (channel, tracker) spins before it parks, "
"learned from all its\nwaits (for tests).");

static PyObject *
mod_spin_window(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    return PyLong_FromLongLong(tps_spin_window(-1));
}

PyDoc_STRVAR(interpreter_id_doc,
"interpreter_id()\n--\n\nThe ID of the current interpreter.");

static PyObject *
mod_interpreter_id(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    return PyLong_FromLongLong(tps_current_interp_id());
}

PyDoc_STRVAR(bytes_threshold_doc,
"_bytes_threshold()\n--\n\n"
"The size from which bytes are shared owner-bound instead of copied\n"
"(a constant of the bytes handler; read by the tests and benchmarks).");

static PyObject *
mod_bytes_threshold(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ig))
{
    return PyLong_FromSsize_t(TPS_BYTES_SHARE_MIN);
}

PyDoc_STRVAR(parked_drains_doc,
"_parked_drains(flag, /)\n--\n\n"
"Whether the calling thread, while parked in a channel wait, drains the\n"
"releases queued for its interpreter (the default).  tpshare.Interpreter's\n"
"result collector turns it off: it waits in an interpreter whose other\n"
"threads run, and waking it for releases only takes CPU from them.\n"
"Returns the previous setting.");

static PyObject *
mod_parked_drains(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int flag = PyObject_IsTrue(arg);
    if (flag < 0) {
        return NULL;
    }
    return PyBool_FromLong(tps_thread_parked_drains(flag));
}

PyDoc_STRVAR(bridge_doc,
"bridge(type, /)\n--\n\n"
"Let instances of type, which tpshare has hooks for, cross CPython's own\n"
"interpreter machinery (prepare_main(), exec's shared namespace, its\n"
"queues and channels) as tpshare share records, without pickling.  For\n"
"the current interpreter: call it in each interpreter that sends them.\n"
"TypeError if tpshare cannot share the type.");

static PyObject *
mod_bridge(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyType_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "bridge() needs a type, not %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (tps_xid_bridge((PyTypeObject *)arg) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyMethodDef tps_module_methods[] = {
    {"bridge", mod_bridge, METH_O, bridge_doc},
    {"share", mod_share, METH_O, share_doc},
    {"attach", mod_attach, METH_O, attach_doc},
    {"is_shareable", mod_is_shareable, METH_O, is_shareable_doc},
    {"registered", mod_registered, METH_NOARGS, registered_doc},
    {"stats", mod_stats, METH_NOARGS, stats_doc},
    {"drain", mod_drain, METH_NOARGS, drain_doc},
    {"origin_id", mod_origin_id, METH_O, origin_id_doc},
    {"_process_exiting", mod_process_exiting, METH_NOARGS,
     process_exiting_doc},
    {"interpreter_id", mod_interpreter_id, METH_NOARGS,
     interpreter_id_doc},
    {"_bytes_threshold", mod_bytes_threshold, METH_NOARGS,
     bytes_threshold_doc},
    {"_parked_drains", mod_parked_drains, METH_O, parked_drains_doc},
    {"_block_counts", mod_block_counts, METH_NOARGS, block_counts_doc},
    {"_block_cached", mod_block_cached, METH_NOARGS, block_cached_doc},
    {"_copy_block_counts", mod_copy_block_counts, METH_NOARGS,
     copy_block_counts_doc},
    {"_small_block_counts", mod_small_block_counts, METH_NOARGS,
     small_block_counts_doc},
    {"_memo_tables", mod_memo_tables, METH_NOARGS, memo_tables_doc},
    {"_spin_window", mod_spin_window, METH_NOARGS, spin_window_doc},
    {NULL},
};
