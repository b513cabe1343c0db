/* registry_list.c - tpshare.registered(): the registry as Python sees it.
 *
 * A list of (name, type, flags) for the registrations visible in the
 * current interpreter, made from a snapshot of the registry's entries
 * (registry.c) taken under its mutex and turned into Python objects after
 * the mutex is released.
 */
#include "registry.h"

/* The names of the TPSHARE_* bits in `flags`, as a tuple of str: a new
 * reference, or NULL with an exception. */
static PyObject *
flags_tuple(uint32_t flags)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {TPSHARE_COPIES, "copies"},
        {TPSHARE_ZERO_COPY, "zero_copy"},
        {TPSHARE_SUBCLASSES, "subclasses"},
        {TPSHARE_ANY_RESULT, "any_result"},
        {TPSHARE_IMMUTABLE, "immutable"},
        {TPSHARE_BRIDGE, "bridge"},
        {TPSHARE_SELF_CONTAINED, "self_contained"},
    };
    PyObject *res = PyTuple_New(0);
    for (size_t i = 0; res != NULL && i < Py_ARRAY_LENGTH(names); i++) {
        if (flags & names[i].bit) {
            PyObject *s = PyUnicode_FromString(names[i].name);
            if (s == NULL || _PyTuple_Resize(&res, PyTuple_GET_SIZE(res) + 1)
                < 0)
            {
                Py_XDECREF(s);
                Py_CLEAR(res);
                break;
            }
            PyTuple_SET_ITEM(res, PyTuple_GET_SIZE(res) - 1, s);
        }
    }
    return res;
}

/* (name, type, flags) for registered(): a new reference, or NULL with an
 * exception.  `type` is borrowed; it gains the tuple's reference. */
static PyObject *
describe(const char *name, PyObject *type, uint32_t flags)
{
    PyObject *f = flags_tuple(flags);
    if (f == NULL) {
        return NULL;
    }
    return Py_BuildValue("(sON)", name, type, f);
}

/* The type registered()'s entry for `e` shows in interpreter `id`: a new
 * reference to a type that this interpreter may hold, else None.  A
 * reference writes the object's refcount, which only its own interpreter
 * may do (refcounts are not atomic) unless it is immortal (its refcount
 * is never written).  So: a heap type visible here is this interpreter's
 * own; a static type is shared by every interpreter and is shown only if
 * immortal (CPython's own static types are; an extension's are not,
 * unless it made them so).  Needs the GIL of `id`. */
static PyObject *
listed_type(const tps_entry *e, int64_t id)
{
    PyObject *type = (PyObject *)e->type;

    if (type == NULL) {
        Py_RETURN_NONE;
    }
    if (e->interp >= 0) {
        assert(e->interp == id);
        assert(PyType_HasFeature(e->type, Py_TPFLAGS_HEAPTYPE));
        return Py_NewRef(type);
    }
    (void)id;
    if (tps_is_immortal(type)) {
        return Py_NewRef(type);
    }
    Py_RETURN_NONE;
}

PyObject *
tps_registry_list(void)
{
    int64_t id = tps_current_interp_id();
    PyObject *res = PyList_New(0);
    PyObject *item = NULL;
    assert(tps_thread_state() != NULL);
    if (res == NULL) {
        return NULL;
    }
    /* Entries are collected (held) under the registry's mutex; the Python
     * objects are made after it is released. */
    size_t k;
    tps_entry **snap = tps_registry_visible_entries(id, &k);
    if (snap == NULL) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < k; i++) {
        tps_entry *e = snap[i];
        if (res != NULL) {
            /* Held before anything is allocated: a collection run by an
             * allocation could free a heap type of this interpreter (its
             * weakref callback then unregisters it). */
            PyObject *type = listed_type(e, id);
            item = describe(e->name, type, e->hooks.flags);
            Py_DECREF(type);
            if (item == NULL || PyList_Append(res, item) < 0) {
                Py_CLEAR(res);
            }
            Py_CLEAR(item);
        }
        tps_entry_decref(e);
    }
    PyMem_RawFree(snap);
    if (res != NULL) {
        item = describe(tps_buffer_entry->name, Py_None,
                        tps_buffer_entry->hooks.flags);
        if (item == NULL || PyList_Append(res, item) < 0) {
            Py_CLEAR(res);
        }
        Py_XDECREF(item);
    }
    if (res != NULL && PyList_Sort(res) < 0) {
        Py_CLEAR(res);
    }
    return res;
}
