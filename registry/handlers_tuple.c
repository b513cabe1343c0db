/* handlers_tuple.c - the built-in handler for tuples.
 *
 * A tuple's record holds one nested record per item, shared from inside
 * the hook so they join the same message: an object that appears twice
 * (at any depth) is shared once and rebuilt once, and the receiver gets
 * one object twice.  The record is neutral when every item is; it becomes
 * owner-bound when any item is (a buffer, large bytes), and is then freed
 * in its owner.  Nesting depth is bounded by the recursion limit.
 */
#include "handlers.h"

/* data->ptr: array of data->size nested records (raw memory). */

static void
release_items(TpShare_Record **items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        tps_handlers_api.Release(items[i]);
    }
    tps_handlers_api.Free(items);
}

static int
tuple_share(PyObject *obj, TpShare_Data *data)
{
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    TpShare_Record **items = NULL;

    if (n == 0) {
        return 0;
    }
    items = tps_handlers_api.Malloc((size_t)n * sizeof(TpShare_Record *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i] = tps_handlers_api.ShareItem(PyTuple_GET_ITEM(obj, i), i);
        if (items[i] == NULL) {
            release_items(items, i);
            return -1;
        }
    }
    data->ptr = items;
    data->size = n;
    return 0;
}

static PyObject *
tuple_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    TpShare_Record **items = data->ptr;
    PyObject *res = PyTuple_New(data->size);
    if (res == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < data->size; i++) {
        PyObject *item = tps_handlers_api.Rebuild(items[i]);
        if (item == NULL) {
            Py_DECREF(res);
            return NULL;
        }
        PyTuple_SET_ITEM(res, i, item);
    }
    return res;
}

static void
tuple_free(TpShare_Data *data)
{
    release_items(data->ptr, data->size);
}

static const TpShare_Hooks tuple_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_IMMUTABLE,
    "builtins.tuple",
    tuple_share, tuple_rebuild, tuple_free,
};

int
tps_handlers_tuple_init(void)
{
    return tps_handlers_api.Register(&PyTuple_Type, &tuple_hooks, 0);
}
