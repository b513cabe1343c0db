/* handlers_export.c - the built-in handler for buffer-protocol exporters.
 *
 * Any object exporting a PEP 3118 buffer (bytearray, memoryview slices,
 * array.array, mmap, third-party arrays) that has no registration of its
 * own is shared zero-copy: the record holds a read-only export of the
 * sender's memory (a writable one when MemChannel.send(writable=True)
 * asks for it) (PyObject_GetBuffer with PyBUF_FULL_RO, so format,
 * shape, strides and suboffsets are kept), which makes it owner-bound.
 * Rebuilding yields a memoryview in the receiver over a tpshare view
 * object (made by view.c, through tps_export_set_view_maker()) that
 * exposes the same memory and layout; when the receiver releases it, the
 * export is released in the owner.
 *
 * This registration is a fallback found by capability, not by type, so it
 * has no type and is made as an entry of its own rather than registered
 * through the C API (which registers types); its name is
 * "tpshare.buffer".  The view object is tpshare's own type, made by the
 * layer above through a hook: neither has a public counterpart.
 */
#include "handlers.h"

tps_entry *tps_buffer_entry = NULL;
tps_entry *tps_buffer_writable_entry = NULL;

/* data->ptr: a Py_buffer in raw memory holding the export. */

/* data->aux: 1 when the export is writable (and so is the view). */

static int
export(PyObject *obj, TpShare_Data *data, int writable)
{
    Py_buffer *view = tps_handlers_api.Malloc(sizeof(Py_buffer));
    if (view == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyObject_GetBuffer(obj, view,
                           writable ? PyBUF_FULL : PyBUF_FULL_RO) < 0)
    {
        tps_handlers_api.Free(view);
        return -1;
    }
    data->ptr = view;
    data->size = view->len;
    data->aux = (uint32_t)writable;
    data->flags |= TPSHARE_DATA_OWNER_BOUND;
    return 0;
}

static int
buffer_share(PyObject *obj, TpShare_Data *data)
{
    return export(obj, data, 0);
}

static int
buffer_share_writable(PyObject *obj, TpShare_Data *data)
{
    return export(obj, data, 1);
}

/* Makes the view object a rebuild exports: installed by the layer above
 * (view.c), so that the registry knows nothing of tpshare's types. */
static _Atomic(tps_view_maker) view_maker;

void
tps_export_set_view_maker(tps_view_maker fn)
{
    atomic_store_explicit(&view_maker, fn, memory_order_release);
}

static PyObject *
buffer_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    tps_view_maker make = atomic_load_explicit(&view_maker,
                                               memory_order_acquire);
    if (make == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "tpshare's view type is not set up");
        return NULL;
    }
    PyObject *view = make(data);
    if (view == NULL) {
        return NULL;
    }
    PyObject *mv = PyMemoryView_FromObject(view);
    Py_DECREF(view);
    return mv;
}

/* Runs in the owner, under its GIL. */
static void
buffer_free(TpShare_Data *data)
{
    PyBuffer_Release(data->ptr);
    tps_handlers_api.Free(data->ptr);
}

static const TpShare_Hooks buffer_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_ZERO_COPY | TPSHARE_ANY_RESULT,
    "tpshare.buffer", buffer_share, buffer_rebuild, buffer_free,
};

/* Used only when asked for (MemChannel.send(writable=True)); never found
 * by type. */
static const TpShare_Hooks buffer_writable_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_ZERO_COPY | TPSHARE_ANY_RESULT,
    "tpshare.buffer", buffer_share_writable, buffer_rebuild, buffer_free,
};

int
tps_handlers_export_init(void)
{
    tps_buffer_entry = tps_entry_new(NULL, -1, &buffer_hooks);
    tps_buffer_writable_entry = tps_entry_new(NULL, -1,
                                              &buffer_writable_hooks);
    if (tps_buffer_entry == NULL || tps_buffer_writable_entry == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}
