/* tpshare_testext.c - a third-party extension written against tpshare.h.
 *
 * The test suite uses this module to check the public C API the way an
 * outside extension author would use it: it includes only Python.h and
 * tpshare.h, imports the API table from Py_mod_exec, and registers hooks
 * for its own types.  It supports isolated subinterpreters with their own
 * GIL, so the tests can import it in several interpreters at once.
 *
 * The types cover each kind of registration:
 *   Matrix   heap type, payload copied into raw memory, counts rebuilds,
 *            bridged to CPython's own queues (TPSHARE_BRIDGE);
 *   Point    static type, payload inline, accepts subclasses;
 *   Blob     heap type, zero-copy and owner-bound (keeps its bytes alive);
 *   Frame    heap type exporting memory, zero-copy by nesting the record
 *            of a memoryview of itself;
 *   Pair     heap type sharing its two items as nested records;
 *   Bad*     heap types whose hooks misbehave in one way each;
 *   Churn    static type registered and unregistered in a loop by churn();
 *   Mortal   static type not immortalized (mortal on 3.12), from
 *            mortal_type() in the main interpreter only;
 *   Vec, Chunk   the users of ShareItem, MustCopy and DataAlloc, in
 *            testext_items.c (a second translation unit); Chunk is a
 *            static type, readied and registered here with the others.
 * Heap types are registered in every interpreter that imports the module;
 * static types once per process (see register_static_once()).
 *
 * XXX Static types are shared by every interpreter, and CPython keeps no
 * per-interpreter state for an extension's static type: its tp_dict (and
 * the descriptors in it) is made by the interpreter that readies it and is
 * then used by all of them without a common lock, and subclassing it in a
 * subinterpreter puts that interpreter's objects into the type's
 * tp_subclasses (3.13.0 then aborts in the main interpreter's GC once the
 * subinterpreter is gone).  That is tolerable for a test extension whose
 * point is to exercise static-type registration; real extensions that
 * support per-interpreter GILs should use heap types only.  So: import
 * this module in the main interpreter first (enforced, see
 * ready_static_types()), and subclass Point only in the main interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "tpshare.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#define TESTEXT_NAME(NAME) "tpshare_testext." NAME

/* Per-interpreter module state. */
typedef struct {
    /* Matrix rebuilds done in this interpreter; read by rebuild_count(). */
    Py_ssize_t matrix_rebuilds;
} testext_state;

/* Defined at the end of the file; rebuild hooks find their module's state
 * through it. */
static struct PyModuleDef testext_module;

/* Process-wide Blob free hook statistics, written by whichever owner
 * interpreter runs the hook, hence atomic. */
static _Atomic int64_t blob_free_count = 0;
static _Atomic int64_t blob_last_free_interp = -1;

/* The result of an == or != comparison whose answer is `equal`.
 * Returns a new reference. */
static PyObject *
equality_result(int op, int equal)
{
    return PyBool_FromLong(equal == (op == Py_EQ));
}


/* ---------------------------------------------------------------------
 * Matrix: a heap type holding rows*cols doubles.
 */

typedef struct {
    PyObject_HEAD
    Py_ssize_t rows;
    Py_ssize_t cols;
    /* rows*cols values, row-major; PyMem_Calloc'd, freed by dealloc. */
    double *values;
} MatrixObject;

/* What Matrix shares: raw memory from TpShare_API->Malloc, freed by
 * matrix_free() in whatever interpreter drops the last hold. */
typedef struct {
    Py_ssize_t rows;
    Py_ssize_t cols;
    double values[];
} MatrixPayload;

/* A new zero-filled matrix of `type` (borrowed).  Returns a new reference,
 * or NULL with ValueError for a negative size, MemoryError if too big. */
static MatrixObject *
matrix_alloc(PyTypeObject *type, Py_ssize_t rows, Py_ssize_t cols)
{
    MatrixObject *self = NULL;

    if (rows < 0 || cols < 0) {
        PyErr_Format(PyExc_ValueError,
                     "Matrix size must not be negative, got %zd x %zd",
                     rows, cols);
        return NULL;
    }
    if (cols != 0
        && rows > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / cols)
    {
        PyErr_NoMemory();
        return NULL;
    }
    self = (MatrixObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->rows = rows;
    self->cols = cols;
    self->values = PyMem_Calloc((size_t)(rows * cols), sizeof(double));
    if (self->values == NULL) {
        Py_DECREF(self);
        PyErr_NoMemory();
        return NULL;
    }
    return self;
}

/* Fill `self` from the iterable `values` (borrowed), which must yield
 * exactly rows*cols floats.  Returns 0, or -1 with an exception set. */
static int
matrix_fill(MatrixObject *self, PyObject *values)
{
    Py_ssize_t n = self->rows * self->cols;
    Py_ssize_t i = 0;
    PyObject *iter = NULL;
    PyObject *item = NULL;
    int rc = -1;

    iter = PyObject_GetIter(values);
    if (iter == NULL) {
        goto finally;
    }
    while ((item = PyIter_Next(iter)) != NULL) {
        double v;

        if (i == n) {
            PyErr_Format(PyExc_ValueError,
                         "a %zd x %zd Matrix takes %zd values, got more",
                         self->rows, self->cols, n);
            goto finally;
        }
        v = PyFloat_AsDouble(item);
        if (v == -1.0 && PyErr_Occurred()) {
            goto finally;
        }
        Py_CLEAR(item);
        self->values[i++] = v;
    }
    if (PyErr_Occurred()) {
        goto finally;
    }
    if (i != n) {
        PyErr_Format(PyExc_ValueError,
                     "a %zd x %zd Matrix takes %zd values, got %zd",
                     self->rows, self->cols, n, i);
        goto finally;
    }
    rc = 0;

finally:
    Py_XDECREF(item);
    Py_XDECREF(iter);
    return rc;
}

/* Matrix(rows, cols, values=None).  type, args, kwds: borrowed.
 * Returns a new reference. */
static PyObject *
matrix_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rows", "cols", "values", NULL};
    Py_ssize_t rows;
    Py_ssize_t cols;
    PyObject *values = Py_None;
    MatrixObject *self = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn|O:Matrix", kwlist,
                                     &rows, &cols, &values)) {
        return NULL;
    }
    self = matrix_alloc(type, rows, cols);
    if (self == NULL) {
        goto error;
    }
    if (values != Py_None && matrix_fill(self, values) < 0) {
        goto error;
    }
    return (PyObject *)self;

error:
    Py_XDECREF(self);
    return NULL;
}

/* self: the object being destroyed (its last reference, consumed). */
static void
matrix_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyMem_Free(((MatrixObject *)self)->values);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A new list of the `n` values of `self` (borrowed) starting at flat
 * index `start`.  Returns a new reference. */
static PyObject *
matrix_values_list(MatrixObject *self, Py_ssize_t start, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);

    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyFloat_FromDouble(self->values[start + i]);

        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* m.tolist(): a list of row lists.  self: borrowed.
 * Returns a new reference. */
static PyObject *
matrix_tolist(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    MatrixObject *self = (MatrixObject *)op;
    PyObject *rows = PyList_New(self->rows);

    if (rows == NULL) {
        return NULL;
    }
    for (Py_ssize_t r = 0; r < self->rows; r++) {
        PyObject *row = matrix_values_list(self, r * self->cols, self->cols);

        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, r, row);
    }
    return rows;
}

/* m[i, j].  self, key: borrowed.  Returns a new reference, or NULL with
 * TypeError for a key that is not a pair of ints, IndexError when out of
 * range (negative indices are out of range). */
static PyObject *
matrix_subscript(PyObject *op, PyObject *key)
{
    MatrixObject *self = (MatrixObject *)op;
    Py_ssize_t i;
    Py_ssize_t j;

    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "Matrix indices must be a (row, col) pair");
        return NULL;
    }
    i = PyNumber_AsSsize_t(PyTuple_GET_ITEM(key, 0), PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    j = PyNumber_AsSsize_t(PyTuple_GET_ITEM(key, 1), PyExc_IndexError);
    if (j == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= self->rows || j < 0 || j >= self->cols) {
        PyErr_Format(PyExc_IndexError,
                     "Matrix index (%zd, %zd) out of range for %zd x %zd",
                     i, j, self->rows, self->cols);
        return NULL;
    }
    return PyFloat_FromDouble(self->values[i * self->cols + j]);
}

/* ==, != with another Matrix (same shape and values).  self, other:
 * borrowed.  Returns a new reference (NotImplemented for anything else). */
static PyObject *
matrix_richcompare(PyObject *op, PyObject *other, int cmp)
{
    MatrixObject *self = (MatrixObject *)op;
    MatrixObject *that = (MatrixObject *)other;
    int equal;

    if ((cmp != Py_EQ && cmp != Py_NE) || Py_TYPE(other) != Py_TYPE(op)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    equal = self->rows == that->rows && self->cols == that->cols;
    for (Py_ssize_t i = 0; equal && i < self->rows * self->cols; i++) {
        equal = self->values[i] == that->values[i];
    }
    return equality_result(cmp, equal);
}

/* "Matrix(rows, cols, [flat values])", which evaluates back to an equal
 * Matrix.  self: borrowed.  Returns a new reference. */
static PyObject *
matrix_repr(PyObject *op)
{
    MatrixObject *self = (MatrixObject *)op;
    PyObject *values = NULL;
    PyObject *result = NULL;

    values = matrix_values_list(self, 0, self->rows * self->cols);
    if (values == NULL) {
        return NULL;
    }
    result = PyUnicode_FromFormat("Matrix(%zd, %zd, %R)",
                                  self->rows, self->cols, values);
    Py_DECREF(values);
    return result;
}

/* share: copy shape and values into raw memory.  obj: borrowed. */
static int
matrix_share(PyObject *obj, TpShare_Data *data)
{
    MatrixObject *self = (MatrixObject *)obj;
    size_t n = (size_t)(self->rows * self->cols);
    MatrixPayload *payload;

    payload = TpShare_API->Malloc(sizeof(MatrixPayload) + n * sizeof(double));
    if (payload == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    payload->rows = self->rows;
    payload->cols = self->cols;
    memcpy(payload->values, self->values, n * sizeof(double));
    data->ptr = payload;
    data->size = (Py_ssize_t)n;
    return 0;
}

/* rebuild: a Matrix of `type` (borrowed, the receiver's class) with the
 * shared values; counts the rebuild in the receiving module's state.
 * Returns a new reference. */
static PyObject *
matrix_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    const MatrixPayload *payload = data->ptr;
    PyObject *module;
    MatrixObject *self;

    module = PyType_GetModuleByDef(type, &testext_module);  /* borrowed */
    if (module == NULL) {
        return NULL;
    }
    self = matrix_alloc(type, payload->rows, payload->cols);
    if (self == NULL) {
        return NULL;
    }
    memcpy(self->values, payload->values,
           (size_t)(payload->rows * payload->cols) * sizeof(double));
    ((testext_state *)PyModule_GetState(module))->matrix_rebuilds++;
    return (PyObject *)self;
}

/* free: the payload came from TpShare_API->Malloc. */
static void
matrix_free(TpShare_Data *data)
{
    TpShare_API->Free(data->ptr);
}

static PyMemberDef matrix_members[] = {
    {"rows", Py_T_PYSSIZET, offsetof(MatrixObject, rows), Py_READONLY,
     "Number of rows."},
    {"cols", Py_T_PYSSIZET, offsetof(MatrixObject, cols), Py_READONLY,
     "Number of columns."},
    {NULL},
};

static PyMethodDef matrix_methods[] = {
    {"tolist", matrix_tolist, METH_NOARGS,
     "tolist()\n--\n\nThe values as a list of row lists."},
    {NULL},
};

static PyType_Slot matrix_slots[] = {
    {Py_tp_doc, "Matrix(rows, cols, values=None)\n--\n\n"
                "A rows x cols matrix of floats (values row-major, "
                "default zeros), shared by copy."},
    {Py_tp_new, matrix_new},
    {Py_tp_dealloc, matrix_dealloc},
    {Py_tp_repr, matrix_repr},
    {Py_tp_richcompare, matrix_richcompare},
    {Py_tp_members, matrix_members},
    {Py_tp_methods, matrix_methods},
    {Py_mp_subscript, matrix_subscript},
    {0, NULL},
};


/* ---------------------------------------------------------------------
 * Point: a static, subclassable type holding two doubles.
 */

typedef struct {
    PyObject_HEAD
    double x;
    double y;
} PointObject;

/* A new Point of `type` (borrowed, Point or a subclass).
 * Returns a new reference. */
static PyObject *
point_make(PyTypeObject *type, double x, double y)
{
    PointObject *self = (PointObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->x = x;
    self->y = y;
    return (PyObject *)self;
}

/* Point(x, y).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
point_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"x", "y", NULL};
    double x;
    double y;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "dd:Point", kwlist,
                                     &x, &y)) {
        return NULL;
    }
    return point_make(type, x, y);
}

/* self: the object being destroyed.  Subclasses' subtype_dealloc drops
 * their heap type's reference; Point itself is static. */
static void
point_dealloc(PyObject *self)
{
    Py_TYPE(self)->tp_free(self);
}

/* "Point(x, y)".  self: borrowed.  Returns a new reference. */
static PyObject *
point_repr(PyObject *op)
{
    PointObject *self = (PointObject *)op;
    PyObject *x = NULL;
    PyObject *y = NULL;
    PyObject *result = NULL;

    x = PyFloat_FromDouble(self->x);
    if (x == NULL) {
        goto finally;
    }
    y = PyFloat_FromDouble(self->y);
    if (y == NULL) {
        goto finally;
    }
    result = PyUnicode_FromFormat("Point(%R, %R)", x, y);

finally:
    Py_XDECREF(y);
    Py_XDECREF(x);
    return result;
}

/* Defined below; point_richcompare() checks for it. */
static PyTypeObject PointType;

/* ==, != with another Point (subclasses included).  self, other: borrowed.
 * Returns a new reference. */
static PyObject *
point_richcompare(PyObject *op, PyObject *other, int cmp)
{
    PointObject *self = (PointObject *)op;
    PointObject *that = (PointObject *)other;

    if ((cmp != Py_EQ && cmp != Py_NE)
        || !PyObject_TypeCheck(other, &PointType))
    {
        Py_RETURN_NOTIMPLEMENTED;
    }
    return equality_result(cmp, self->x == that->x && self->y == that->y);
}

/* share: x and y fit inline.  obj: borrowed, a Point or subclass. */
static int
point_share(PyObject *obj, TpShare_Data *data)
{
    data->inline_data.f64[0] = ((PointObject *)obj)->x;
    data->inline_data.f64[1] = ((PointObject *)obj)->y;
    return 0;
}

/* rebuild: a Point of `type` (borrowed).  Returns a new reference. */
static PyObject *
point_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    return point_make(type, data->inline_data.f64[0],
                      data->inline_data.f64[1]);
}

static PyMemberDef point_members[] = {
    {"x", Py_T_DOUBLE, offsetof(PointObject, x), Py_READONLY, NULL},
    {"y", Py_T_DOUBLE, offsetof(PointObject, y), Py_READONLY, NULL},
    {NULL},
};

static PyTypeObject PointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = TESTEXT_NAME("Point"),
    .tp_doc = "Point(x, y)\n--\n\nA static, subclassable point, shared "
              "inline by copy.",
    .tp_basicsize = sizeof(PointObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = point_new,
    .tp_dealloc = point_dealloc,
    .tp_repr = point_repr,
    .tp_richcompare = point_richcompare,
    .tp_members = point_members,
};

static const TpShare_Hooks point_hooks = {
    TPSHARE_HOOKS_INIT,
    .flags = TPSHARE_COPIES | TPSHARE_SUBCLASSES,
    .name = TESTEXT_NAME("Point"),
    .share = point_share,
    .rebuild = point_rebuild,
};


/* ---------------------------------------------------------------------
 * Blob: a heap type around a bytes object, shared zero-copy.
 */

typedef struct {
    PyObject_HEAD
    /* Strong reference to a bytes object; released by dealloc. */
    PyObject *data;
} BlobObject;

/* A new Blob of `type` holding `bytes` (both borrowed).
 * Returns a new reference. */
static PyObject *
blob_make(PyTypeObject *type, PyObject *bytes)
{
    BlobObject *self = (BlobObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->data = Py_NewRef(bytes);
    return (PyObject *)self;
}

/* Blob(b).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
blob_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"b", NULL};
    PyObject *bytes;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:Blob", kwlist,
                                     &PyBytes_Type, &bytes)) {
        return NULL;
    }
    return blob_make(type, bytes);
}

/* self: the object being destroyed. */
static void
blob_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    Py_XDECREF(((BlobObject *)self)->data);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* share: point into the bytes and keep them alive through data->obj,
 * which makes the data owner-bound.  obj: borrowed. */
static int
blob_share(PyObject *obj, TpShare_Data *data)
{
    PyObject *bytes = ((BlobObject *)obj)->data;

    data->obj = Py_NewRef(bytes);
    data->ptr = PyBytes_AS_STRING(bytes);
    data->size = PyBytes_GET_SIZE(bytes);
    return 0;
}

/* rebuild: a Blob of `type` (borrowed) holding a copy of the sender's
 * bytes.  Returns a new reference. */
static PyObject *
blob_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    PyObject *bytes;
    PyObject *result;

    bytes = PyBytes_FromStringAndSize(data->ptr, data->size);
    if (bytes == NULL) {
        return NULL;
    }
    result = blob_make(type, bytes);
    Py_DECREF(bytes);
    return result;
}

/* free: runs in the owner (the data is owner-bound).  ptr points into the
 * bytes tpshare releases after this hook, so only count the call. */
static void
blob_free(TpShare_Data *data)
{
    (void)data;
    atomic_store(&blob_last_free_interp,
                 PyInterpreterState_GetID(PyInterpreterState_Get()));
    atomic_fetch_add(&blob_free_count, 1);
}

static PyMemberDef blob_members[] = {
    {"data", Py_T_OBJECT_EX, offsetof(BlobObject, data), Py_READONLY,
     "The bytes held."},
    {NULL},
};

static PyType_Slot blob_slots[] = {
    {Py_tp_doc, "Blob(b)\n--\n\nA bytes holder shared zero-copy: the "
                "receiver reads the sender's bytes."},
    {Py_tp_new, blob_new},
    {Py_tp_dealloc, blob_dealloc},
    {Py_tp_members, blob_members},
    {0, NULL},
};


/* ---------------------------------------------------------------------
 * Frame: a heap type exporting read-only memory it does not copy, shared
 * zero-copy and owner-bound by nesting the record of a memoryview of
 * itself (the pattern docs/c-api.md shows): the built-in buffer handler
 * then does the export, the view in the receiver and the release in the
 * owner.
 */

typedef struct {
    PyObject_HEAD
    /* A read-only export of the object given to Frame(); released by
     * dealloc. */
    Py_buffer view;
} FrameObject;

/* A new Frame of `type` (borrowed) over the memory of `obj` (borrowed).
 * Returns a new reference. */
static PyObject *
frame_make(PyTypeObject *type, PyObject *obj)
{
    FrameObject *self = (FrameObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_SIMPLE) < 0) {
        /* tp_alloc zeroed the view: dealloc releases nothing. */
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Frame(obj).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
frame_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"obj", NULL};
    PyObject *obj;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Frame", kwlist, &obj)) {
        return NULL;
    }
    return frame_make(type, obj);
}

/* self: the object being destroyed. */
static void
frame_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    if (((FrameObject *)self)->view.obj != NULL) {
        PyBuffer_Release(&((FrameObject *)self)->view);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* bf_getbuffer: re-export the held memory, read-only.  self: borrowed. */
static int
frame_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    FrameObject *f = (FrameObject *)self;

    return PyBuffer_FillInfo(view, self, f->view.buf, f->view.len, 1, flags);
}

/* share: nest the record of memoryview(self).  The buffer handler exports
 * the memory (so the data is owner-bound), and the receiver gets a view of
 * the same memory.  Sharing self directly would find these very hooks
 * again.  obj: borrowed. */
static int
frame_share(PyObject *obj, TpShare_Data *data)
{
    PyObject *mv = PyMemoryView_FromObject(obj);

    if (mv == NULL) {
        return -1;
    }
    data->ptr = TpShare_API->Share(mv);
    Py_DECREF(mv);
    return data->ptr == NULL ? -1 : 0;
}

/* rebuild: a Frame of `type` (borrowed) over the receiver's view of the
 * sender's memory.  Returns a new reference. */
static PyObject *
frame_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    PyObject *mv = TpShare_API->Rebuild(data->ptr);
    PyObject *result;

    if (mv == NULL) {
        return NULL;
    }
    result = frame_make(type, mv);
    Py_DECREF(mv);
    return result;
}

/* free: give up the nested record (runs in the owner: it is owner-bound). */
static void
frame_free(TpShare_Data *data)
{
    TpShare_API->Release(data->ptr);
}

/* Frame.tobytes() -> a copy of the memory.  Returns a new reference. */
static PyObject *
frame_tobytes(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FrameObject *f = (FrameObject *)self;

    return PyBytes_FromStringAndSize(f->view.buf, f->view.len);
}

static PyMethodDef frame_methods[] = {
    {"tobytes", frame_tobytes, METH_NOARGS,
     "tobytes()\n--\n\nA copy of the memory."},
    {NULL},
};

static PyType_Slot frame_slots[] = {
    {Py_tp_doc, "Frame(obj)\n--\n\nA read-only window on obj's memory, "
                "shared zero-copy."},
    {Py_tp_new, frame_new},
    {Py_tp_dealloc, frame_dealloc},
    {Py_tp_methods, frame_methods},
    {Py_bf_getbuffer, frame_getbuffer},
    {0, NULL},
};

/* ---------------------------------------------------------------------
 * Pair: a heap type holding two objects, shared as two nested records.
 */

typedef struct {
    PyObject_HEAD
    /* Strong references; released by dealloc or by the GC. */
    PyObject *a;
    PyObject *b;
} PairObject;

/* What Pair shares: raw memory from TpShare_API->Malloc holding the
 * records of both items; pair_free() releases both and frees it. */
typedef struct {
    TpShare_Record *a;
    TpShare_Record *b;
} PairPayload;

/* A new Pair of `type` holding a and b (all borrowed).
 * Returns a new reference. */
static PyObject *
pair_make(PyTypeObject *type, PyObject *a, PyObject *b)
{
    PairObject *self = (PairObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->a = Py_NewRef(a);
    self->b = Py_NewRef(b);
    return (PyObject *)self;
}

/* Pair(a, b).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
pair_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"a", "b", NULL};
    PyObject *a;
    PyObject *b;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Pair", kwlist,
                                     &a, &b)) {
        return NULL;
    }
    return pair_make(type, a, b);
}

/* self: borrowed. */
static int
pair_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((PairObject *)self)->a);
    Py_VISIT(((PairObject *)self)->b);
    return 0;
}

/* self: borrowed. */
static int
pair_clear(PyObject *self)
{
    Py_CLEAR(((PairObject *)self)->a);
    Py_CLEAR(((PairObject *)self)->b);
    return 0;
}

/* self: the object being destroyed. */
static void
pair_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)pair_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* share: share both items into the message being built.  obj: borrowed.
 * On failure nothing is kept. */
static int
pair_share(PyObject *obj, TpShare_Data *data)
{
    PairObject *self = (PairObject *)obj;
    PairPayload *payload;

    payload = TpShare_API->Malloc(sizeof(PairPayload));
    if (payload == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    payload->a = TpShare_API->Share(self->a);
    if (payload->a == NULL) {
        goto error;
    }
    payload->b = TpShare_API->Share(self->b);
    if (payload->b == NULL) {
        goto error;
    }
    data->ptr = payload;
    return 0;

error:
    if (payload->a != NULL) {
        TpShare_API->Release(payload->a);
    }
    TpShare_API->Free(payload);
    return -1;
}

/* rebuild: a Pair of `type` (borrowed) of the rebuilt items.
 * Returns a new reference. */
static PyObject *
pair_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    const PairPayload *payload = data->ptr;
    PyObject *a = NULL;
    PyObject *b = NULL;
    PyObject *result = NULL;

    a = TpShare_API->Rebuild(payload->a);
    if (a == NULL) {
        goto finally;
    }
    b = TpShare_API->Rebuild(payload->b);
    if (b == NULL) {
        goto finally;
    }
    result = pair_make(type, a, b);

finally:
    Py_XDECREF(b);
    Py_XDECREF(a);
    return result;
}

/* free: give up both nested records, then the payload. */
static void
pair_free(TpShare_Data *data)
{
    PairPayload *payload = data->ptr;

    TpShare_API->Release(payload->a);
    TpShare_API->Release(payload->b);
    TpShare_API->Free(payload);
}

static PyMemberDef pair_members[] = {
    {"a", Py_T_OBJECT_EX, offsetof(PairObject, a), Py_READONLY, NULL},
    {"b", Py_T_OBJECT_EX, offsetof(PairObject, b), Py_READONLY, NULL},
    {NULL},
};

static PyType_Slot pair_slots[] = {
    {Py_tp_doc, "Pair(a, b)\n--\n\nTwo objects, shared as nested "
                "records."},
    {Py_tp_new, pair_new},
    {Py_tp_dealloc, pair_dealloc},
    {Py_tp_traverse, pair_traverse},
    {Py_tp_clear, pair_clear},
    {Py_tp_members, pair_members},
    {0, NULL},
};


/* ---------------------------------------------------------------------
 * Bad*: field-less heap types whose hooks misbehave.
 */

/* self: the object being destroyed. */
static void
bare_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot bare_slots[] = {
    {Py_tp_dealloc, bare_dealloc},
    {0, NULL},
};

/* share: succeeds, sharing nothing.  obj: borrowed. */
static int
empty_share(PyObject *obj, TpShare_Data *data)
{
    (void)obj;
    (void)data;
    return 0;
}

/* rebuild: a well-behaved rebuild, for hooks whose share always fails.
 * type: borrowed.  Returns a new reference. */
static PyObject *
bare_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    (void)data;
    return type->tp_alloc(type, 0);
}

/* share: raises.  obj: borrowed. */
static int
bad_raise_share(PyObject *obj, TpShare_Data *data)
{
    (void)obj;
    (void)data;
    PyErr_SetString(PyExc_ValueError, "BadRaise refuses");
    return -1;
}

/* share: fails without setting an exception.  obj: borrowed. */
static int
bad_null_share(PyObject *obj, TpShare_Data *data)
{
    (void)obj;
    (void)data;
    return -1;
}

/* rebuild: returns NULL without setting an exception.  type: borrowed. */
static PyObject *
bad_rebuild_null(PyTypeObject *type, const TpShare_Data *data)
{
    (void)type;
    (void)data;
    return NULL;
}

/* rebuild: returns an int though `type` (borrowed) is expected.
 * Returns a new reference. */
static PyObject *
bad_rebuild_type(PyTypeObject *type, const TpShare_Data *data)
{
    (void)type;
    (void)data;
    return PyLong_FromLong(42);
}

/* rebuild: raises.  type: borrowed.  Returns NULL. */
static PyObject *
bad_rebuild_raise(PyTypeObject *type, const TpShare_Data *data)
{
    (void)type;
    (void)data;
    PyErr_SetString(PyExc_RuntimeError, "cannot rebuild");
    return NULL;
}

/* share: succeeds with an exception left set (a hook bug).  obj:
 * borrowed.  Returns 0. */
static int
bad_leave_share(PyObject *obj, TpShare_Data *data)
{
    (void)obj;
    (void)data;
    PyErr_SetString(PyExc_KeyError, "left behind by share");
    return 0;
}

/* rebuild: returns an object with an exception left set (a hook bug).
 * type: borrowed.  Returns a new reference. */
static PyObject *
bad_rebuild_leave(PyTypeObject *type, const TpShare_Data *data)
{
    PyObject *res = bare_rebuild(type, data);
    if (res != NULL) {
        PyErr_SetString(PyExc_KeyError, "left behind by rebuild");
    }
    return res;
}


/* ---------------------------------------------------------------------
 * The heap types, each with the hooks registered for it in every
 * interpreter that imports the module.
 */

typedef struct {
    PyType_Spec spec;
    TpShare_Hooks hooks;
} heap_type_def;

#define HEAP_TYPE(NAME, OBJECT, TPFLAGS, SLOTS, FLAGS, SHARE, REBUILD, FREE) \
    {                                                                     \
        .spec = {                                                         \
            .name = TESTEXT_NAME(NAME),                                   \
            .basicsize = sizeof(OBJECT),                                  \
            .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE        \
                     | (TPFLAGS),                                         \
            .slots = (SLOTS),                                             \
        },                                                                \
        .hooks = {                                                        \
            TPSHARE_HOOKS_INIT,                                           \
            .flags = (FLAGS),                                             \
            .name = TESTEXT_NAME(NAME),                                   \
            .share = (SHARE),                                             \
            .rebuild = (REBUILD),                                         \
            .free = (FREE),                                               \
        },                                                                \
    }

#define BAD_TYPE(NAME, SHARE, REBUILD) \
    HEAP_TYPE(NAME, PyObject, 0, bare_slots, 0, SHARE, REBUILD, NULL)

static heap_type_def heap_types[] = {
    HEAP_TYPE("Matrix", MatrixObject, 0, matrix_slots,
              TPSHARE_COPIES | TPSHARE_BRIDGE, matrix_share, matrix_rebuild,
              matrix_free),
    HEAP_TYPE("Blob", BlobObject, 0, blob_slots,
              TPSHARE_ZERO_COPY, blob_share, blob_rebuild, blob_free),
    HEAP_TYPE("Frame", FrameObject, 0, frame_slots,
              TPSHARE_ZERO_COPY, frame_share, frame_rebuild, frame_free),
    HEAP_TYPE("Pair", PairObject, Py_TPFLAGS_HAVE_GC, pair_slots,
              0, pair_share, pair_rebuild, pair_free),
    BAD_TYPE("BadRaise", bad_raise_share, bare_rebuild),
    BAD_TYPE("BadNull", bad_null_share, bare_rebuild),
    BAD_TYPE("BadRebuildNull", empty_share, bad_rebuild_null),
    BAD_TYPE("BadRebuildType", empty_share, bad_rebuild_type),
    BAD_TYPE("BadRebuildRaise", empty_share, bad_rebuild_raise),
    BAD_TYPE("BadLeave", bad_leave_share, bare_rebuild),
    BAD_TYPE("BadRebuildLeave", empty_share, bad_rebuild_leave),
};


/* ---------------------------------------------------------------------
 * Churn: a static type that churn() registers and unregisters in a loop.
 */

typedef struct {
    PyObject_HEAD
    long long value;
} ChurnObject;

/* A new Churn of `type` (borrowed).  Returns a new reference. */
static PyObject *
churn_make(PyTypeObject *type, long long value)
{
    ChurnObject *self = (ChurnObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->value = value;
    return (PyObject *)self;
}

/* Churn(value).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
churn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", NULL};
    long long value;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:Churn", kwlist,
                                     &value)) {
        return NULL;
    }
    return churn_make(type, value);
}

/* self: the object being destroyed. */
static void
churn_dealloc(PyObject *self)
{
    Py_TYPE(self)->tp_free(self);
}

/* share: the value fits inline.  obj: borrowed. */
static int
churn_share(PyObject *obj, TpShare_Data *data)
{
    data->inline_data.i64[0] = ((ChurnObject *)obj)->value;
    return 0;
}

/* rebuild: a Churn of `type` (borrowed).  Returns a new reference. */
static PyObject *
churn_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    return churn_make(type, data->inline_data.i64[0]);
}

static PyMemberDef churn_members[] = {
    {"value", Py_T_LONGLONG, offsetof(ChurnObject, value), Py_READONLY,
     NULL},
    {NULL},
};

static PyTypeObject ChurnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = TESTEXT_NAME("Churn"),
    .tp_doc = "Churn(value)\n--\n\nA static type registered only while "
              "churn() runs.",
    .tp_basicsize = sizeof(ChurnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = churn_new,
    .tp_dealloc = churn_dealloc,
    .tp_members = churn_members,
};

static const TpShare_Hooks churn_hooks = {
    TPSHARE_HOOKS_INIT,
    .flags = TPSHARE_COPIES,
    .name = TESTEXT_NAME("Churn"),
    .share = churn_share,
    .rebuild = churn_rebuild,
};


/* ---------------------------------------------------------------------
 * Mortal: a static type left as CPython makes it (not immortalized like
 * Point and Churn): on 3.12 its refcount is an ordinary count, as in any
 * extension written before per-interpreter GILs (3.13 makes every static
 * type immortal).  It is not added to the module: mortal_type() readies
 * and returns it in the main interpreter only, so no other interpreter
 * ever writes its refcount.  The tests register it through
 * register_type() to check that tpshare does not write it from another
 * interpreter either.
 */

static PyTypeObject MortalType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = TESTEXT_NAME("Mortal"),
    .tp_doc = "A static type whose refcount is an ordinary count.",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
};


/* ---------------------------------------------------------------------
 * Module functions.
 */

/* mortal_type() -> the Mortal type, readied on first use.  Main
 * interpreter only (RuntimeError elsewhere).  Returns a new reference. */
static PyObject *
testext_mortal_type(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "mortal_type() is for the main interpreter only");
        return NULL;
    }
    if (!PyType_HasFeature(&MortalType, Py_TPFLAGS_READY)
        && PyType_Ready(&MortalType) < 0)
    {
        return NULL;
    }
    return Py_NewRef((PyObject *)&MortalType);
}

/* rebuild_count() -> Matrix rebuilds in this interpreter.  module:
 * borrowed.  Returns a new reference. */
static PyObject *
testext_rebuild_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    testext_state *state = PyModule_GetState(module);

    return PyLong_FromSsize_t(state->matrix_rebuilds);
}

/* blob_frees() -> Blob free hook calls in the process.
 * Returns a new reference. */
static PyObject *
testext_blob_frees(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLongLong(atomic_load(&blob_free_count));
}

/* blob_last_free_interp() -> ID of the interpreter the last Blob free hook
 * ran in, -1 if none ran yet.  Returns a new reference. */
static PyObject *
testext_blob_last_free_interp(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLongLong(atomic_load(&blob_last_free_interp));
}

/* churn(n) -> n, after registering and unregistering Churn n times.
 * arg: borrowed.  Returns a new reference, or NULL with the ValueError of
 * Register (for example when Churn is registered by someone else). */
static PyObject *
testext_churn(PyObject *module, PyObject *arg)
{
    Py_ssize_t n;

    (void)module;
    n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError,
                     "churn() count must not be negative, got %zd", n);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (TpShare_API->Register(&ChurnType, &churn_hooks, 0) < 0) {
            return NULL;
        }
        if (TpShare_API->Unregister(&ChurnType) < 0) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(n);
}

/* register_point_again(replace=False) -> None.  args, kwds: borrowed.
 * Returns a new reference, or NULL with Register's ValueError. */
static PyObject *
testext_register_point_again(PyObject *module, PyObject *args,
                             PyObject *kwds)
{
    static char *kwlist[] = {"replace", NULL};
    int replace = 0;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     "|p:register_point_again", kwlist,
                                     &replace)) {
        return NULL;
    }
    if (TpShare_API->Register(&PointType, &point_hooks,
                              replace ? TPSHARE_REPLACE : 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* lookup_name(type) -> the name of the registration used for `type`
 * (borrowed), or None.  Returns a new reference. */
static PyObject *
testext_lookup_name(PyObject *module, PyObject *arg)
{
    TpShare_Hooks hooks = {TPSHARE_HOOKS_INIT};
    int found;

    (void)module;
    if (!PyType_Check(arg)) {
        PyErr_Format(PyExc_TypeError,
                     "lookup_name() needs a type, not %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    found = TpShare_API->Lookup((PyTypeObject *)arg, &hooks);
    if (found < 0) {
        return NULL;
    }
    if (found == 0) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(hooks.name);
}

/* lookup_loop(type, n) -> how many of n calls of Lookup(type) found
 * hooks: times the registry's lookup from C, without a Python call per
 * lookup.  args: borrowed.  Returns a new reference. */
static PyObject *
testext_lookup_loop(PyObject *module, PyObject *args)
{
    PyObject *type;
    Py_ssize_t n;
    Py_ssize_t found = 0;
    TpShare_Hooks hooks = {TPSHARE_HOOKS_INIT};

    (void)module;
    if (!PyArg_ParseTuple(args, "O!n:lookup_loop", &PyType_Type, &type,
                          &n)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = TpShare_API->Lookup((PyTypeObject *)type, &hooks);

        if (rc < 0) {
            return NULL;
        }
        found += rc;
    }
    return PyLong_FromSsize_t(found);
}

/* share_and_release(obj) -> None, after sharing `obj` (borrowed) and
 * releasing the record.  Returns a new reference, or NULL with the error
 * of Share. */
static PyObject *
testext_share_and_release(PyObject *module, PyObject *arg)
{
    TpShare_Record *rec;

    (void)module;
    rec = TpShare_API->Share(arg);
    if (rec == NULL) {
        return NULL;
    }
    TpShare_API->Release(rec);
    Py_RETURN_NONE;
}

/* roundtrip(obj) -> the object rebuilt in this interpreter from a record
 * of `obj` (borrowed).  Returns a new reference, or NULL with the error of
 * Share or Rebuild; the record is released either way. */
static PyObject *
testext_roundtrip(PyObject *module, PyObject *arg)
{
    TpShare_Record *rec;
    PyObject *result;

    (void)module;
    rec = TpShare_API->Share(arg);
    if (rec == NULL) {
        return NULL;
    }
    result = TpShare_API->Rebuild(rec);
    TpShare_API->Release(rec);
    return result;
}

/* api_version() -> the ABI version of the imported table.
 * Returns a new reference. */
static PyObject *
testext_api_version(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromUnsignedLong(TpShare_API->abi_version);
}

/* ---------------------------------------------------------------------
 * Registering arbitrary types from Python, for the registry's own tests.
 *
 * register_type(type, name, subclasses=False) registers hooks that share
 * nothing and rebuild by calling the receiver's type with no arguments.
 */

static int
plain_share(PyObject *obj, TpShare_Data *data)
{
    (void)obj;
    (void)data;
    return 0;
}

/* Returns a new reference: type(). */
static PyObject *
plain_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    (void)data;
    return PyObject_CallNoArgs((PyObject *)type);
}

/* register_type(type, name, subclasses=False) -> None.  `type` and
 * `name` are borrowed; the name is copied by Register(). */
static PyObject *
testext_register_type(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"type", "name", "subclasses", NULL};
    PyObject *type;
    const char *name;
    int subclasses = 0;
    TpShare_Hooks hooks = {0};

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!s|p:register_type",
                                     kwlist, &PyType_Type, &type, &name,
                                     &subclasses)) {
        return NULL;
    }
    hooks.abi_version = TPSHARE_ABI_VERSION;
    hooks.size = sizeof(TpShare_Hooks);
    hooks.flags = TPSHARE_COPIES | (subclasses ? TPSHARE_SUBCLASSES : 0);
    hooks.name = name;
    hooks.share = plain_share;
    hooks.rebuild = plain_rebuild;
    if (TpShare_API->Register((PyTypeObject *)type, &hooks, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* register_sized(type, name, size, extra=0) -> None: register plain hooks
 * for `type` (borrowed) whose `size` field says `size`, laid out in a
 * bigger buffer whose first byte past the known struct is `extra`: how an
 * extension built against another header's TpShare_Hooks looks to
 * Register().  Raises Register()'s ValueError. */
static PyObject *
testext_register_sized(PyObject *module, PyObject *args)
{
    PyObject *type;
    const char *name;
    unsigned int size;
    unsigned char extra = 0;
    union {
        TpShare_Hooks hooks;
        unsigned char bytes[sizeof(TpShare_Hooks) + 64];
    } buf;

    (void)module;
    if (!PyArg_ParseTuple(args, "O!sI|b:register_sized", &PyType_Type,
                          &type, &name, &size, &extra)) {
        return NULL;
    }
    if (size > sizeof(buf)) {
        PyErr_Format(PyExc_ValueError, "size above %zu", sizeof(buf));
        return NULL;
    }
    memset(&buf, 0, sizeof(buf));
    buf.hooks.abi_version = TPSHARE_ABI_VERSION;
    buf.hooks.size = size;
    buf.hooks.flags = TPSHARE_COPIES;
    buf.hooks.name = name;
    buf.hooks.share = plain_share;
    buf.hooks.rebuild = plain_rebuild;
    buf.bytes[sizeof(TpShare_Hooks)] = extra;
    if (TpShare_API->Register((PyTypeObject *)type, &buf.hooks, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* hooks_size() -> sizeof(TpShare_Hooks) as this extension compiled it.
 * Returns a new reference. */
static PyObject *
testext_hooks_size(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromSize_t(sizeof(TpShare_Hooks));
}

/* unregister_type(type) -> None; `type` is borrowed. */
static PyObject *
testext_unregister_type(PyObject *module, PyObject *type)
{
    (void)module;
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "unregister_type() needs a type");
        return NULL;
    }
    if (TpShare_API->Unregister((PyTypeObject *)type) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* bridge_type(type) -> None through the C API's Bridge; `type` is
 * borrowed. */
static PyObject *
testext_bridge_type(PyObject *module, PyObject *type)
{
    (void)module;
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "bridge_type() needs a type");
        return NULL;
    }
    if (TpShare_API->Bridge((PyTypeObject *)type) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef testext_methods[] = {
    {"bridge_type", testext_bridge_type, METH_O,
     "bridge_type(type)\n--\n\nBridge type to CPython's registry with "
     "TpShare_API->Bridge."},
    {"register_type", (PyCFunction)(void (*)(void))testext_register_type,
     METH_VARARGS | METH_KEYWORDS,
     "register_type(type, name, subclasses=False)\n--\n\nRegister "
     "hooks rebuilding type() for type."},
    {"register_sized", testext_register_sized, METH_VARARGS,
     "register_sized(type, name, size, extra=0)\n--\n\nRegister hooks "
     "whose size field is size, followed by the byte extra."},
    {"hooks_size", testext_hooks_size, METH_NOARGS,
     "hooks_size()\n--\n\nsizeof(TpShare_Hooks) in this extension."},
    {"unregister_type", testext_unregister_type, METH_O,
     "unregister_type(type)\n--\n\nRemove the registration of type."},
    {"rebuild_count", testext_rebuild_count, METH_NOARGS,
     "rebuild_count()\n--\n\nMatrix rebuilds done in this interpreter."},
    {"blob_frees", testext_blob_frees, METH_NOARGS,
     "blob_frees()\n--\n\nBlob free hook calls in the whole process."},
    {"blob_last_free_interp", testext_blob_last_free_interp, METH_NOARGS,
     "blob_last_free_interp()\n--\n\nID of the interpreter the last Blob "
     "free hook ran in, or -1."},
    {"churn", testext_churn, METH_O,
     "churn(n)\n--\n\nRegister and unregister Churn n times; return n."},
    {"register_point_again", (PyCFunction)(void (*)(void))
     testext_register_point_again, METH_VARARGS | METH_KEYWORDS,
     "register_point_again(replace=False)\n--\n\nRegister Point once "
     "more (raises ValueError unless replace)."},
    {"lookup_name", testext_lookup_name, METH_O,
     "lookup_name(type)\n--\n\nName of the registration used for type, "
     "or None."},
    {"lookup_loop", testext_lookup_loop, METH_VARARGS,
     "lookup_loop(type, n)\n--\n\nCall Lookup(type) n times; return how "
     "many found hooks."},
    {"share_and_release", testext_share_and_release, METH_O,
     "share_and_release(obj)\n--\n\nShare obj, then release the record."},
    {"roundtrip", testext_roundtrip, METH_O,
     "roundtrip(obj)\n--\n\nShare obj and rebuild it in this "
     "interpreter."},
    {"mortal_type", testext_mortal_type, METH_NOARGS,
     "mortal_type()\n--\n\nThe static, mortal type Mortal (main "
     "interpreter only)."},
    {"api_version", testext_api_version, METH_NOARGS,
     "api_version()\n--\n\nABI version of the tpshare C API table."},
    {NULL},
};


/* ---------------------------------------------------------------------
 * Module initialisation.
 */

/* Register `type`'s `hooks` unless this process already has them: a
 * static type is registered once for all interpreters, so every import
 * after the first finds it registered.  Returns 0, or -1 with an
 * exception set. */
static int
register_static_once(PyTypeObject *type, const TpShare_Hooks *hooks)
{
    TpShare_Hooks found_hooks = {TPSHARE_HOOKS_INIT};
    PyObject *exc = NULL;
    int found;

    found = TpShare_API->Lookup(type, &found_hooks);
    if (found < 0) {
        return -1;
    }
    /* Lookup() also reports hooks inherited from a base or a fallback, so
     * only our own name means "already done". */
    if (found && strcmp(found_hooks.name, hooks->name) == 0) {
        return 0;
    }
    if (TpShare_API->Register(type, hooks, 0) == 0) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
        return -1;
    }
    /* Another interpreter may have registered it between our Lookup() and
     * Register(). */
    exc = PyErr_GetRaisedException();
    found = TpShare_API->Lookup(type, &found_hooks);
    if (found > 0 && strcmp(found_hooks.name, hooks->name) == 0) {
        Py_DECREF(exc);
        return 0;
    }
    if (found < 0) {
        Py_DECREF(exc);
        return -1;
    }
    PyErr_SetRaisedException(exc);
    return -1;
}

/* Make `def`'s type for `module` (borrowed), add it to the module and
 * register its hooks for this interpreter.  Returns 0, or -1 with an
 * exception set. */
static int
add_heap_type(PyObject *module, heap_type_def *def)
{
    PyObject *type;
    int rc = -1;

    type = PyType_FromModuleAndSpec(module, &def->spec, NULL);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)type) < 0) {
        goto finally;
    }
    if (TpShare_API->Register((PyTypeObject *)type, &def->hooks, 0) < 0) {
        goto finally;
    }
    rc = 0;

finally:
    Py_DECREF(type);
    return rc;
}

/* Interpreters with their own GIL touch a static type's refcount, and
 * those of the objects in its dict (the attribute descriptors), in
 * parallel and without atomics: without care they can drop to zero and be
 * freed under another interpreter (seen on 3.12 and 3.13).  Make them
 * immortal, as CPython does for its own static types, so their refcounts
 * are never written.  Heap types need none of this.  _Py_IMMORTAL_REFCNT
 * is a private detail of CPython: acceptable in a test extension that
 * exists to exercise static types, not a pattern to copy (docs/c-api.md
 * says to use heap types). */
static void
immortalize_static_type(PyTypeObject *type)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;

    Py_SET_REFCNT(type, _Py_IMMORTAL_REFCNT);
    Py_SET_REFCNT(type->tp_dict, _Py_IMMORTAL_REFCNT);
    Py_SET_REFCNT(type->tp_mro, _Py_IMMORTAL_REFCNT);
    Py_SET_REFCNT(type->tp_bases, _Py_IMMORTAL_REFCNT);
    while (PyDict_Next(type->tp_dict, &pos, &key, &value)) {
        Py_SET_REFCNT(key, _Py_IMMORTAL_REFCNT);
        Py_SET_REFCNT(value, _Py_IMMORTAL_REFCNT);
    }
}

/* testext_items.c: the static type Chunk and its hooks, readied and
 * registered with the other static types; testext_items_exec() adds Vec
 * and the functions of Vec and Chunk to `module` (borrowed), returning
 * 0, or -1 with an exception. */
extern PyTypeObject testext_ChunkType;
extern const TpShare_Hooks testext_chunk_hooks;
int testext_items_exec(PyObject *module);

/* Ready the static types.  The first interpreter to do it creates their
 * tp_dict, which all interpreters then read, so it must be the main
 * interpreter: a subinterpreter's objects die with it.  Returns 0, or -1
 * with ImportError. */
static int
ready_static_types(void)
{
    static PyTypeObject *const types[] = {&PointType, &ChurnType,
                                          &testext_ChunkType};

    for (size_t i = 0; i < Py_ARRAY_LENGTH(types); i++) {
        if (PyType_HasFeature(types[i], Py_TPFLAGS_READY)) {
            continue;
        }
        if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
            PyErr_SetString(PyExc_ImportError,
                            "tpshare_testext must be imported in the main "
                            "interpreter first (its static types are "
                            "readied there)");
            return -1;
        }
        if (PyType_Ready(types[i]) < 0) {
            return -1;
        }
        immortalize_static_type(types[i]);
    }
    return 0;
}


/* Py_mod_exec.  module: borrowed. */
static int
testext_exec(PyObject *module)
{
    if (TpShare_IMPORT() < 0) {
        return -1;
    }
    if (ready_static_types() < 0) {
        return -1;
    }
    if (PyModule_AddType(module, &PointType) < 0
        || PyModule_AddType(module, &ChurnType) < 0
        || PyModule_AddType(module, &testext_ChunkType) < 0) {
        return -1;
    }
    if (register_static_once(&PointType, &point_hooks) < 0
        || register_static_once(&testext_ChunkType,
                                &testext_chunk_hooks) < 0) {
        return -1;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(heap_types); i++) {
        if (add_heap_type(module, &heap_types[i]) < 0) {
            return -1;
        }
    }
    return testext_items_exec(module);
}

static PyModuleDef_Slot testext_slots[] = {
    {Py_mod_exec, testext_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef testext_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tpshare_testext",
    .m_doc = "A third-party extension built against tpshare.h alone, for "
             "the tpshare test suite.",
    .m_size = sizeof(testext_state),
    .m_methods = testext_methods,
    .m_slots = testext_slots,
};

/* Multi-phase init (PEP 489): returns the definition, not a module;
 * the definition is static, so no reference is owned. */
PyMODINIT_FUNC
PyInit_tpshare_testext(void)
{
    return PyModuleDef_Init(&testext_module);
}
