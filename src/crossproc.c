/* crossproc.c - registered types across processes: the two private
 * functions tpshare.shm.Channel calls to send and receive an instance of
 * a type registered from C with TPSHARE_SELF_CONTAINED.
 *
 * _crossproc_share(obj) shares obj as any send does (the registry's
 * lookup, the hook, nested items joining one message), checks that the
 * record keeps the promise of its flag, copies out what another process
 * can use (the registration name, inline_data, size, aux and the `size`
 * bytes at ptr) and releases the record, so the free hook runs at once.
 * _crossproc_rebuild(...) finds the current interpreter's registration of
 * that name and calls its rebuild hook on a TpShare_Data whose ptr points
 * at a private copy of the bytes (the caller's bytes object, read from
 * the segment once): another process cannot change them during the call.
 *
 * The record's promise is checked where this process can see it: no obj,
 * no TPSHARE_DATA_OWNER_BOUND, nothing nested owner-bound, a size that
 * matches ptr.  A nested record that is not owner-bound hides in the
 * hook's own payload, where only the hook knows it: the flag is the
 * type's promise not to make one.
 */
#include "tpshare_internal.h"

#include <string.h>

/* The registration named `name` visible in the current interpreter, with
 * a new reference, or NULL with LookupError (or MemoryError). */
static tps_entry *
named_entry(const char *name)
{
    size_t n;
    tps_entry *found = NULL;
    tps_entry **snap = tps_registry_visible_entries(tps_current_interp_id(),
                                                    &n);
    if (snap == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (found == NULL && snap[i]->type != NULL
                && strcmp(snap[i]->name, name) == 0) {
            found = snap[i];
        }
        else {
            tps_entry_decref(snap[i]);
        }
    }
    PyMem_RawFree(snap);
    if (found == NULL) {
        PyErr_Format(PyExc_LookupError,
                     "no type is registered with tpshare as '%s' in this "
                     "interpreter (import the extension that registers it)",
                     name);
    }
    return found;
}

PyDoc_STRVAR(crossproc_share_doc,
"_crossproc_share(obj, /)\n--\n\n"
"(name, inline, size, aux, payload) of obj shared by its registration,\n"
"for another process, or None when its type has none; NotShareableError\n"
"unless the registration is TPSHARE_SELF_CONTAINED and the data keeps\n"
"that promise.");

/* obj: borrowed.  Returns a new reference (a 5-tuple, or None), or NULL
 * with an exception. */
static PyObject *
crossproc_share(PyObject *Py_UNUSED(module), PyObject *obj)
{
    PyObject *res = NULL, *payload = NULL, *inl = NULL;
    TpShare_Record *rec;
    const TpShare_Data *d;
    const char *name;

    if (tps_registry_find(Py_TYPE(obj)) == NULL) {
        /* Not registered: the caller says what else it can do. */
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    rec = tps_share(obj);
    if (rec == NULL) {
        return NULL;
    }
    d = &rec->data;
    name = rec->entry->name;
    if (!(rec->entry->hooks.flags & TPSHARE_SELF_CONTAINED)) {
        tps_set_not_shareable(
            "%s objects cannot cross processes: their registration '%s' "
            "does not declare TPSHARE_SELF_CONTAINED",
            Py_TYPE(obj)->tp_name, name);
        goto finally;
    }
    if (d->obj != NULL || (d->flags & TPSHARE_DATA_OWNER_BOUND)
            || (rec->flags & TPS_REC_BOUND)) {
        tps_set_not_shareable(
            "%s objects cannot cross processes: the share hook of '%s' "
            "declares TPSHARE_SELF_CONTAINED but made owner-bound data "
            "(obj, TPSHARE_DATA_OWNER_BOUND or a nested record of it)",
            Py_TYPE(obj)->tp_name, name);
        goto finally;
    }
    if (d->ptr != NULL) {
        if (d->size < 0) {
            tps_set_not_shareable(
                "%s objects cannot cross processes: the share hook of '%s' "
                "set ptr with a negative size", Py_TYPE(obj)->tp_name,
                name);
            goto finally;
        }
        payload = PyBytes_FromStringAndSize(d->ptr, d->size);
    }
    else {
        payload = Py_NewRef(Py_None);
    }
    if (payload == NULL) {
        goto finally;
    }
    inl = PyBytes_FromStringAndSize((const char *)d->inline_data.bytes,
                                    (Py_ssize_t)sizeof(d->inline_data));
    if (inl == NULL) {
        goto finally;
    }
    res = Py_BuildValue("(sOnIO)", name, inl, d->size, (unsigned int)d->aux,
                        payload);
finally:
    Py_XDECREF(inl);
    Py_XDECREF(payload);
    tps_record_release(rec);
    return res;
}

PyDoc_STRVAR(crossproc_rebuild_doc,
"_crossproc_rebuild(name, inline, size, aux, payload, /)\n--\n\n"
"Rebuild what _crossproc_share() made in another process, with this\n"
"interpreter's TPSHARE_SELF_CONTAINED registration of `name`.");

/* args: borrowed.  Returns a new reference, or NULL with an exception. */
static PyObject *
crossproc_rebuild(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *name;
    Py_ssize_t size;
    unsigned int aux;
    PyObject *inl, *payload, *res = NULL;
    PyTypeObject *type = NULL;
    TpShare_Data d;
    tps_entry *e;

    if (!PyArg_ParseTuple(args, "sSnIO:_crossproc_rebuild", &name, &inl,
                          &size, &aux, &payload)) {
        return NULL;
    }
    memset(&d, 0, sizeof(d));
    if (PyBytes_GET_SIZE(inl) != (Py_ssize_t)sizeof(d.inline_data)) {
        PyErr_SetString(PyExc_ValueError, "inline data of a wrong length");
        return NULL;
    }
    if (payload != Py_None && (!PyBytes_Check(payload)
                               || PyBytes_GET_SIZE(payload) != size)) {
        PyErr_SetString(PyExc_ValueError,
                        "the payload is not `size` bytes");
        return NULL;
    }
    e = named_entry(name);
    if (e == NULL) {
        return NULL;
    }
    if (!(e->hooks.flags & TPSHARE_SELF_CONTAINED)) {
        tps_set_not_shareable(
            "the registration '%s' of this interpreter does not declare "
            "TPSHARE_SELF_CONTAINED: its rebuild does not accept data from "
            "another process", name);
        goto finally;
    }
    memcpy(d.inline_data.bytes, PyBytes_AS_STRING(inl),
           sizeof(d.inline_data));
    d.size = size;
    d.aux = aux;
    /* The bytes object is this process's own copy: nobody else writes
     * it during the call. */
    d.ptr = payload == Py_None ? NULL : PyBytes_AS_STRING(payload);
    /* A heap type visible here is this interpreter's: held during the
     * call.  A static type lives for the process (and its refcount is
     * not ours to write from any interpreter). */
    type = e->type;
    if (e->interp >= 0) {
        Py_INCREF(type);
    }
    res = e->hooks.rebuild(type, &d);
    if (res != NULL && !(e->hooks.flags & TPSHARE_ANY_RESULT)
            && !PyObject_TypeCheck(res, type)) {
        PyErr_Format(PyExc_TypeError,
                     "the rebuild hook of '%s' returned %.200s, not %.200s",
                     name, Py_TYPE(res)->tp_name, type->tp_name);
        Py_CLEAR(res);
    }
    if (e->interp >= 0) {
        Py_DECREF(type);
    }
finally:
    tps_entry_decref(e);
    return res;
}

static PyMethodDef crossproc_functions[] = {
    {"_crossproc_share", crossproc_share, METH_O, crossproc_share_doc},
    {"_crossproc_rebuild", crossproc_rebuild, METH_VARARGS,
     crossproc_rebuild_doc},
    {NULL},
};

int
tps_crossproc_init(PyObject *module)
{
    return PyModule_AddFunctions(module, crossproc_functions);
}
