/* testext_items.c - the part of tpshare_testext that uses the members
 * appended to the C API table: ShareItem, MustCopy and DataAlloc.
 *
 * A second translation unit of the same module, as a bigger extension
 * would have: it includes tpshare.h too and imports the table for itself
 * (TpShare_API is one static per translation unit).  Its exec function,
 * testext_items_exec(), is called from the module's.
 *
 *   Vec      heap type, an immutable sequence of any objects; shares item
 *            i with ShareItem(item, i), so an error names "Vec[i]";
 *   Chunk    static type, immutable bytes, TPSHARE_SELF_CONTAINED (it
 *            crosses tpshare.shm when small); shares up to 16 bytes inline,
 *            up to TPSHARE_DATA_ALLOC_MAX (16 KiB) in DataAlloc memory,
 *            more by reference to its bytes (owner-bound) unless
 *            MustCopy() says a private copy is needed, then in Malloc
 *            memory.  Static, so
 *            registered once for the process (by the module's exec, which
 *            readies it with the other static types): an interpreter's
 *            exit hook re-shares its queued values after its modules, and
 *            the heap types and registrations they made, are gone, so only
 *            a type registered process-wide is ever asked to MustCopy.
 * Functions: chunk_paths() (how many shares took each way, process-wide),
 * chunk_frees() (free hook calls, and those that saw ptr NULL),
 * chunk_obey_must_copy(flag) (off: Chunk ignores MustCopy, to show what
 * it is for).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "tpshare.h"

#include <stdatomic.h>
#include <string.h>

#define ITEMS_NAME(NAME) "tpshare_testext." NAME

/* ---------------------------------------------------------------------
 * Vec: an immutable sequence whose items are shared with ShareItem.
 */

typedef struct {
    PyObject_HEAD
    /* A tuple of the items (strong reference). */
    PyObject *items;
} VecObject;

/* A new Vec of `type` (borrowed) over `items` (borrowed tuple).
 * Returns a new reference. */
static PyObject *
vec_make(PyTypeObject *type, PyObject *items)
{
    VecObject *self = (VecObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->items = Py_NewRef(items);
    return (PyObject *)self;
}

/* Vec(*items).  type, args: borrowed.  Returns a new reference. */
static PyObject *
vec_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Vec() takes no keywords");
        return NULL;
    }
    return vec_make(type, args);
}

/* self: borrowed. */
static int
vec_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((VecObject *)self)->items);
    return 0;
}

/* self: borrowed. */
static int
vec_clear(PyObject *self)
{
    Py_CLEAR(((VecObject *)self)->items);
    return 0;
}

/* self: the object being destroyed. */
static void
vec_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)vec_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The items as a tuple.  self: borrowed.  Returns a new reference. */
static PyObject *
vec_tuple(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(((VecObject *)self)->items);
}

/* Release the first n records of `recs` and the array itself. */
static void
vec_release(TpShare_Record **recs, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        TpShare_API->Release(recs[i]);
    }
    TpShare_API->Free(recs);
}

/* share: one nested record per item, shared with its index.  obj:
 * borrowed.  On failure nothing is kept. */
static int
vec_share(PyObject *obj, TpShare_Data *data)
{
    PyObject *items = ((VecObject *)obj)->items;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    TpShare_Record **recs;

    recs = TpShare_API->Malloc((size_t)(n + 1) * sizeof(TpShare_Record *));
    if (recs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        recs[i] = TpShare_API->ShareItem(PyTuple_GET_ITEM(items, i), i);
        if (recs[i] == NULL) {
            vec_release(recs, i);
            return -1;
        }
    }
    data->ptr = recs;
    data->size = n;
    return 0;
}

/* rebuild: a Vec of `type` (borrowed) of the rebuilt items.
 * Returns a new reference. */
static PyObject *
vec_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    TpShare_Record **recs = data->ptr;
    PyObject *items = PyTuple_New(data->size);
    PyObject *result = NULL;

    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < data->size; i++) {
        PyObject *item = TpShare_API->Rebuild(recs[i]);
        if (item == NULL) {
            goto finally;
        }
        PyTuple_SET_ITEM(items, i, item);
    }
    result = vec_make(type, items);

finally:
    Py_DECREF(items);
    return result;
}

/* free: give up the items' records, then the array. */
static void
vec_free(TpShare_Data *data)
{
    vec_release(data->ptr, data->size);
}

static PyMethodDef vec_methods[] = {
    {"tuple", vec_tuple, METH_NOARGS, "The items as a tuple."},
    {NULL},
};

static PyType_Slot vec_slots[] = {
    {Py_tp_doc, "Vec(*items)\n--\n\nAn immutable sequence, shared item "
                "by item with ShareItem."},
    {Py_tp_new, vec_new},
    {Py_tp_dealloc, vec_dealloc},
    {Py_tp_traverse, vec_traverse},
    {Py_tp_clear, vec_clear},
    {Py_tp_methods, vec_methods},
    {0, NULL},
};

static PyType_Spec vec_spec = {
    .name = ITEMS_NAME("Vec"),
    .basicsize = sizeof(VecObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_HAVE_GC,
    .slots = vec_slots,
};

static const TpShare_Hooks vec_hooks = {
    TPSHARE_HOOKS_INIT,
    .flags = TPSHARE_COPIES | TPSHARE_IMMUTABLE,
    .name = ITEMS_NAME("Vec"),
    .share = vec_share,
    .rebuild = vec_rebuild,
    .free = vec_free,
};


/* ---------------------------------------------------------------------
 * Chunk: immutable bytes, copied small, referenced large.
 */

typedef struct {
    PyObject_HEAD
    /* The bytes (strong reference). */
    PyObject *bytes;
} ChunkObject;

/* How a Chunk was shared (data->aux), and the process-wide counts of
 * each, written by whichever interpreter shares. */
enum {
    CHUNK_INLINE,   /* in data->inline_data */
    CHUNK_BLOCK,    /* DataAlloc memory */
    CHUNK_REF,      /* the sender's bytes, data->obj holding them */
    CHUNK_COPY,     /* Malloc memory */
    CHUNK_PATHS
};
static _Atomic long chunk_path_counts[CHUNK_PATHS];
static _Atomic long chunk_free_count;
static _Atomic long chunk_free_null_count;
static _Atomic int chunk_obeys_must_copy = 1;

/* A new Chunk of `type` (borrowed) over `bytes` (borrowed).
 * Returns a new reference. */
static PyObject *
chunk_make(PyTypeObject *type, PyObject *bytes)
{
    ChunkObject *self = (ChunkObject *)type->tp_alloc(type, 0);

    if (self == NULL) {
        return NULL;
    }
    self->bytes = Py_NewRef(bytes);
    return (PyObject *)self;
}

/* Chunk(b).  type, args, kwds: borrowed.  Returns a new reference. */
static PyObject *
chunk_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"b", NULL};
    PyObject *bytes;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "S:Chunk", kwlist,
                                     &bytes)) {
        return NULL;
    }
    return chunk_make(type, bytes);
}

/* self: the object being destroyed. */
static void
chunk_dealloc(PyObject *self)
{
    Py_XDECREF(((ChunkObject *)self)->bytes);
    Py_TYPE(self)->tp_free(self);
}

/* share: choose how to carry the bytes (see the enum).  obj: borrowed.
 * Returns 0, or -1 with MemoryError or SystemError (DataAlloc broke its
 * contract) and nothing kept. */
static int
chunk_share(PyObject *obj, TpShare_Data *data)
{
    PyObject *bytes = ((ChunkObject *)obj)->bytes;
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    const char *src = PyBytes_AS_STRING(bytes);

    data->size = n;
    if (n <= (Py_ssize_t)sizeof(data->inline_data)) {
        memcpy(data->inline_data.bytes, src, (size_t)n);
        data->aux = CHUNK_INLINE;
    }
    else if (TpShare_API->DataAlloc(data, (size_t)n) != NULL) {
        /* One block per data: a second request gets none. */
        void *first = data->ptr;
        if (TpShare_API->DataAlloc(data, 1) != NULL || data->ptr != first) {
            PyErr_SetString(PyExc_SystemError,
                            "DataAlloc served the same data twice");
            return -1;
        }
        memcpy(data->ptr, src, (size_t)n);
        data->aux = CHUNK_BLOCK;
    }
    else if (!TpShare_API->MustCopy()
             || !atomic_load(&chunk_obeys_must_copy))
    {
        data->obj = Py_NewRef(bytes);
        data->ptr = (void *)src;
        data->aux = CHUNK_REF;
    }
    else {
        data->ptr = TpShare_API->Malloc((size_t)n);
        if (data->ptr == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(data->ptr, src, (size_t)n);
        data->aux = CHUNK_COPY;
    }
    atomic_fetch_add(&chunk_path_counts[data->aux], 1);
    return 0;
}

/* rebuild: a Chunk of `type` (borrowed) over a copy of the bytes.
 * Returns a new reference.  TPSHARE_SELF_CONTAINED: the data may come
 * from another process (tpshare.shm), so aux and size are checked; tpshare
 * guarantees that ptr, when set, holds `size` bytes. */
static PyObject *
chunk_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    const void *src = data->aux == CHUNK_INLINE
                      ? (const void *)data->inline_data.bytes : data->ptr;
    PyObject *bytes, *result;

    if (data->aux >= CHUNK_PATHS || data->size < 0
        || (data->aux == CHUNK_INLINE
            && data->size > (Py_ssize_t)sizeof(data->inline_data))
        || (data->aux != CHUNK_INLINE && data->ptr == NULL))
    {
        PyErr_SetString(PyExc_ValueError, "Chunk: inconsistent data");
        return NULL;
    }
    bytes = PyBytes_FromStringAndSize(src, data->size);
    if (bytes == NULL) {
        return NULL;
    }
    result = chunk_make(type, bytes);
    Py_DECREF(bytes);
    return result;
}

/* free: DataAlloc memory is tpshare's (ptr is NULL here), a reference
 * is tpshare's to drop; only a Malloc copy is ours. */
static void
chunk_free(TpShare_Data *data)
{
    atomic_fetch_add(&chunk_free_count, 1);
    if (data->ptr == NULL) {
        atomic_fetch_add(&chunk_free_null_count, 1);
    }
    if (data->aux == CHUNK_COPY) {
        TpShare_API->Free(data->ptr);
    }
}

/* The bytes.  self: borrowed.  Returns a new reference. */
static PyObject *
chunk_get_bytes(PyObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(((ChunkObject *)self)->bytes);
}

static PyGetSetDef chunk_getset[] = {
    {"bytes", chunk_get_bytes, NULL, "The bytes.", NULL},
    {NULL},
};

PyTypeObject testext_ChunkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = ITEMS_NAME("Chunk"),
    .tp_doc = "Chunk(b)\n--\n\nImmutable bytes, copied small (inline or "
              "DataAlloc), referenced large unless MustCopy().",
    .tp_basicsize = sizeof(ChunkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = chunk_new,
    .tp_dealloc = chunk_dealloc,
    .tp_getset = chunk_getset,
};

const TpShare_Hooks testext_chunk_hooks = {
    TPSHARE_HOOKS_INIT,
    .flags = TPSHARE_COPIES | TPSHARE_IMMUTABLE | TPSHARE_SELF_CONTAINED,
    .name = ITEMS_NAME("Chunk"),
    .share = chunk_share,
    .rebuild = chunk_rebuild,
    .free = chunk_free,
};

/* chunk_paths() -> {"inline": n, "block": n, "ref": n, "copy": n}.
 * Returns a new reference. */
static PyObject *
chunk_paths(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sl,sl,sl,sl}",
                         "inline", atomic_load(&chunk_path_counts[0]),
                         "block", atomic_load(&chunk_path_counts[1]),
                         "ref", atomic_load(&chunk_path_counts[2]),
                         "copy", atomic_load(&chunk_path_counts[3]));
}

/* chunk_frees() -> (free hook calls, calls that saw data->ptr NULL).
 * Returns a new reference. */
static PyObject *
chunk_frees(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(ll)", atomic_load(&chunk_free_count),
                         atomic_load(&chunk_free_null_count));
}

/* chunk_obey_must_copy(flag): whether Chunk copies when MustCopy() says
 * so (the default).  flag: borrowed.  Returns None. */
static PyObject *
chunk_obey_must_copy(PyObject *Py_UNUSED(module), PyObject *flag)
{
    int on = PyObject_IsTrue(flag);

    if (on < 0) {
        return NULL;
    }
    atomic_store(&chunk_obeys_must_copy, on);
    Py_RETURN_NONE;
}

static PyMethodDef items_methods[] = {
    {"chunk_paths", chunk_paths, METH_NOARGS,
     "How many Chunk shares took each way, process-wide."},
    {"chunk_frees", chunk_frees, METH_NOARGS,
     "(Chunk free hook calls, those that saw data->ptr NULL)."},
    {"chunk_obey_must_copy", chunk_obey_must_copy, METH_O,
     "Whether Chunk copies when MustCopy() asks (default True)."},
    {NULL},
};

/* Make `spec`'s type in `module` (borrowed), add it and register
 * `hooks` for it.  Returns 0, or -1 with an exception. */
static int
items_add_type(PyObject *module, PyType_Spec *spec,
               const TpShare_Hooks *hooks)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
    int rc = -1;

    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)type) == 0
        && TpShare_API->Register((PyTypeObject *)type, hooks, 0) == 0)
    {
        rc = 0;
    }
    Py_DECREF(type);
    return rc;
}

/* Called from the module's Py_mod_exec, which adds and registers Chunk
 * itself with its other static types.  module: borrowed.  Returns 0, or
 * -1 with an exception. */
int
testext_items_exec(PyObject *module)
{
    if (TpShare_IMPORT() < 0
        || PyModule_AddFunctions(module, items_methods) < 0
        || items_add_type(module, &vec_spec, &vec_hooks) < 0)
    {
        return -1;
    }
    return 0;
}
