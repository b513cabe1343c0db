/* view.c - the cross-interpreter view type, tpshare.View.
 *
 * A View lives in a receiving interpreter and exports, read-only unless
 * the sender asked otherwise, the memory of a buffer shared by another
 * interpreter (registry/handlers_export.c),
 * with the same format, shape, strides and suboffsets.  Receivers see it
 * through a memoryview (memoryview itself cannot be subclassed, and is
 * what consumers expect); the View is that memoryview's `.obj`.
 *
 * It holds the record that owns the sender's export.  When the view dies
 * (the memoryview was released or dropped), it lets go of the record,
 * which releases the export in the owner interpreter.  While it lives it
 * counts as a remote holder, which keeps the owner from being torn down
 * under it.
 */
#include "pytypes.h"
#include "record.h"

typedef struct {
    PyObject_HEAD
    TpShare_Record *rec;     /* held (tps_record_hold) */
    const Py_buffer *src;    /* owned by rec: the sender's export */
    int64_t holder;          /* the interpreter this view lives in */
    Py_ssize_t exports;      /* buffers exported by this view */
} View;

PyObject *
tps_view_new(TpShare_Record *rec, const Py_buffer *src)
{
    tps_interp *st = tps_interp_current();
    tps_module_state *state = st ? tps_interp_module_state(st) : NULL;
    if (state == NULL) {
        return NULL;
    }
    View *self = PyObject_New(View, state->ViewType);
    if (self == NULL) {
        return NULL;
    }
    self->holder = tps_interp_id(st);
    self->src = src;
    self->exports = 0;
    self->rec = rec;
    tps_record_hold(rec, self->holder);
    return (PyObject *)self;
}

/* The view maker of registry/handlers_export.c: `data` (borrowed) is
 * that of a buffer-export record being rebuilt. */
static PyObject *
view_of_export(const TpShare_Data *data)
{
    return tps_view_new(TPS_RECORD_OF(data), data->ptr);
}

static void
view_dealloc(PyObject *op)
{
    View *self = (View *)op;
    PyTypeObject *tp = Py_TYPE(op);
    tps_record_unhold(self->rec, self->holder);
    PyObject_Free(op);
    Py_DECREF(tp);
}

/* Export the shared memory read-only, honouring the consumer's flags. */
static int
view_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    View *self = (View *)op;
    const Py_buffer *src = self->src;

    int writable = self->rec->data.aux != 0;
    if ((flags & PyBUF_WRITABLE) && !writable) {
        PyErr_SetString(PyExc_BufferError,
                        "memory shared from another interpreter is "
                        "read-only (send it with writable=True)");
        goto error;
    }
    if (src->suboffsets != NULL && (flags & PyBUF_INDIRECT) != PyBUF_INDIRECT)
    {
        PyErr_SetString(PyExc_BufferError,
                        "the shared buffer needs suboffsets (PIL-style)");
        goto error;
    }
    if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS
        && !PyBuffer_IsContiguous(src, 'F'))
    {
        PyErr_SetString(PyExc_BufferError,
                        "the shared buffer is not Fortran-contiguous");
        goto error;
    }
    if ((flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS
        && !PyBuffer_IsContiguous(src, 'C'))
    {
        PyErr_SetString(PyExc_BufferError,
                        "the shared buffer is not C-contiguous");
        goto error;
    }
    if ((flags & PyBUF_ANY_CONTIGUOUS) == PyBUF_ANY_CONTIGUOUS
        && !PyBuffer_IsContiguous(src, 'A'))
    {
        PyErr_SetString(PyExc_BufferError,
                        "the shared buffer is not contiguous");
        goto error;
    }
    if ((flags & PyBUF_STRIDES) != PyBUF_STRIDES
        && !PyBuffer_IsContiguous(src, 'C'))
    {
        PyErr_SetString(PyExc_BufferError,
                        "the shared buffer is not C-contiguous: ask for "
                        "strides");
        goto error;
    }
    view->buf = src->buf;
    view->len = src->len;
    view->readonly = !writable;
    view->itemsize = src->itemsize;
    view->format = (flags & PyBUF_FORMAT) ? src->format : NULL;
    if ((flags & PyBUF_ND) == PyBUF_ND) {
        view->ndim = src->ndim;
        view->shape = src->shape;
    }
    else {
        view->ndim = 1;
        view->shape = NULL;
    }
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? src->strides
                                                              : NULL;
    view->suboffsets = src->suboffsets;
    view->internal = NULL;
    view->obj = Py_NewRef(op);
    self->exports++;
    return 0;

error:
    view->obj = NULL;
    return -1;
}

static void
view_releasebuffer(PyObject *op, Py_buffer *Py_UNUSED(view))
{
    ((View *)op)->exports--;
}

static PyObject *
view_get_owner(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(((View *)op)->rec->owner);
}

static PyObject *
view_get_nbytes(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((View *)op)->src->len);
}

static PyObject *
view_repr(PyObject *op)
{
    View *self = (View *)op;
    return PyUnicode_FromFormat("<tpshare.View of %zd bytes from "
                                "interpreter %lld>", self->src->len,
                                (long long)self->rec->owner);
}

static PyGetSetDef view_getset[] = {
    {"owner", view_get_owner, NULL,
     "ID of the interpreter whose memory this view exposes.", NULL},
    {"nbytes", view_get_nbytes, NULL, "Size of the memory in bytes.", NULL},
    {NULL},
};

static PyType_Slot view_slots[] = {
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_repr, view_repr},
    {Py_tp_getset, view_getset},
    {Py_bf_getbuffer, view_getbuffer},
    {Py_bf_releasebuffer, view_releasebuffer},
    {Py_tp_doc, "Memory of another interpreter, read-only.  Made by "
                "tpshare when a buffer is received; use it through the "
                "memoryview you received."},
    {0, NULL},
};

static PyType_Spec view_spec = {
    .name = "tpshare.View",
    .basicsize = sizeof(View),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = view_slots,
};

int
tps_view_init_type(PyObject *module, tps_module_state *state)
{
    state->ViewType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &view_spec, NULL);
    if (state->ViewType == NULL) {
        return -1;
    }
    tps_export_set_view_maker(view_of_export);
    return PyModule_AddType(module, state->ViewType);
}
