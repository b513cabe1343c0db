/* buffer_type.c - tpshare.Buffer: memory that belongs to no interpreter.
 *
 * A Buffer is a writable block of raw memory with an atomic refcount.
 * Sharing one (through Channel, MemChannel or share()) makes a neutral
 * record that holds the block, and rebuilding makes a new Buffer object in
 * the receiver over the same block: no export of the sender is involved,
 * so views of it need no owner and stay valid after the interpreter that
 * made it is gone.  It is the unit a zero-copy pipeline between
 * long-lived workers should use.
 *
 * The block is never resized, so exports need no bookkeeping; concurrent
 * writes from several interpreters are the user's to coordinate, as with
 * any shared memory.
 */
#include "pytypes.h"
#include "module_state.h"

#include <pthread.h>
#include <string.h>

typedef struct {
    atomic_long refcnt;
    Py_ssize_t size;
    /* 0 until the block is first pickled, then its key in `pickled`
     * (written under pickled.mutex; read there, or by the last holder). */
    int64_t id;
    char data[];
} block;

/* The blocks that were pickled, by id, so that unpickling finds them
 * while they live.  Process-wide; raw memory only.  A block enters when
 * it is first pickled and leaves when its last holder lets go. */
static struct {
    pthread_mutex_t mutex;
    ptrmap byid;                 /* id -> block (no reference) */
    int64_t next_id;
} pickled = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .next_id = 16,               /* keys 0, 1 and 2 are reserved by ptrmap */
};

#define BLOCK_KEY(id) ((void *)(uintptr_t)(id))

typedef struct {
    PyObject_HEAD
    block *b;                    /* held */
} Buffer;

static block *
buffer_block_new(Py_ssize_t size)
{
    /* calloc: large blocks come as untouched zero pages. */
    block *b = PyMem_RawCalloc(1, sizeof(block) + (size_t)size);
    if (b == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_init(&b->refcnt, 1);
    b->size = size;
    return b;
}

static void
block_incref(block *b)
{
    atomic_fetch_add(&b->refcnt, 1);
}

static void
block_decref(block *b)
{
    if (atomic_fetch_sub(&b->refcnt, 1) == 1) {
        /* The last holder: nothing else can pickle it now, so `id` is
         * stable.  A concurrent unpickle that found it sees refcnt 0 under
         * the mutex and leaves it alone. */
        if (b->id != 0) {
            pthread_mutex_lock(&pickled.mutex);
            ptrmap_del(&pickled.byid, BLOCK_KEY(b->id));
            pthread_mutex_unlock(&pickled.mutex);
        }
        PyMem_RawFree(b);
    }
}

/* The pickled block with this id, with a new reference, or NULL when it
 * is gone (or is going: its last holder is freeing it). */
static block *
block_lookup(int64_t id)
{
    int found;
    pthread_mutex_lock(&pickled.mutex);
    block *b = ptrmap_get(&pickled.byid, BLOCK_KEY(id), &found);
    if (b != NULL) {
        long n = atomic_load(&b->refcnt);
        while (n > 0
               && !atomic_compare_exchange_weak(&b->refcnt, &n, n + 1)) {
        }
        if (n == 0) {
            b = NULL;
        }
    }
    pthread_mutex_unlock(&pickled.mutex);
    return b;
}

/* The id of `b` (held by the caller), given on first use.  0 with
 * MemoryError. */
static int64_t
block_pickle_id(block *b)
{
    pthread_mutex_lock(&pickled.mutex);
    int64_t id = b->id;
    if (id == 0) {
        id = pickled.next_id++;
        if (ptrmap_set(&pickled.byid, BLOCK_KEY(id), b) < 0) {
            id = 0;
        }
        b->id = id;
    }
    pthread_mutex_unlock(&pickled.mutex);
    if (id == 0) {
        PyErr_NoMemory();
    }
    return id;
}

/* A Buffer of `type` over `b`, taking over the caller's reference.  New
 * reference or NULL (the block reference is then released).  The first
 * live Buffer of a block in an interpreter is the one a Buffer coming
 * back by id resolves to (buffer_cache; without memory for the entry,
 * identity is lost, nothing else). */
static PyObject *
buffer_wrap(PyTypeObject *type, block *b)
{
    Buffer *self = PyObject_New(Buffer, type);
    if (self == NULL) {
        block_decref(b);
        return NULL;
    }
    self->b = b;
    tps_module_state *state = PyType_GetModuleState(type);
    int found;
    (void)ptrmap_get(&state->buffer_cache, b, &found);
    if (!found) {
        (void)ptrmap_set(&state->buffer_cache, b, self);
    }
    return (PyObject *)self;
}

static PyObject *
buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:Buffer", kwlist, &size)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    block *b = buffer_block_new(size);
    return b == NULL ? NULL : buffer_wrap(type, b);
}

static void
buffer_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    block *b = ((Buffer *)op)->b;
    tps_module_state *state = PyType_GetModuleState(tp);
    int found;
    if (ptrmap_get(&state->buffer_cache, b, &found) == op) {
        ptrmap_del(&state->buffer_cache, b);
    }
    block_decref(b);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static int
buffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    block *b = ((Buffer *)op)->b;
    return PyBuffer_FillInfo(view, op, b->data, b->size, 0, flags);
}

static Py_ssize_t
buffer_len(PyObject *op)
{
    return ((Buffer *)op)->b->size;
}

static PyObject *
buffer_get_nbytes(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((Buffer *)op)->b->size);
}

static PyObject *
buffer_get_refs(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(atomic_load(&((Buffer *)op)->b->refcnt));
}

static PyObject *
buffer_repr(PyObject *op)
{
    block *b = ((Buffer *)op)->b;
    return PyUnicode_FromFormat("<tpshare.Buffer of %zd bytes at %p>",
                                b->size, (void *)b->data);
}

/* Pickled by id, for this process only (op: borrowed; new reference or
 * NULL). */
static PyObject *
buffer_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int64_t id = block_pickle_id(((Buffer *)op)->b);
    if (id == 0) {
        return NULL;
    }
    return tps_pickle_reduce(op, "Buffer", id);
}

static PyMethodDef buffer_methods[] = {
    {"__reduce__", buffer_reduce, METH_NOARGS,
     "Pickled by id: unpickles in this process only."},
    {NULL},
};

static PyGetSetDef buffer_getset[] = {
    {"nbytes", buffer_get_nbytes, NULL, "Size in bytes.", NULL},
    {"refs", buffer_get_refs, NULL,
     "Holders of the memory, in every interpreter (Buffer objects and "
     "records).", NULL},
    {NULL},
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_new, buffer_new},
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_repr, buffer_repr},
    {Py_tp_getset, buffer_getset},
    {Py_tp_methods, buffer_methods},
    {Py_bf_getbuffer, buffer_getbuffer},
    {Py_sq_length, buffer_len},
    {Py_tp_doc, "Buffer(size)\n--\n\n"
                "Writable memory that belongs to no interpreter: shared "
                "zero-copy, it stays valid whichever interpreter exits."},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "tpshare.Buffer",
    .basicsize = sizeof(Buffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = buffer_slots,
};

/* ---------------------------------------------------------------------
 * Hooks: a neutral record holding the block.
 */

static int
hook_share(PyObject *obj, TpShare_Data *data)
{
    block *b = ((Buffer *)obj)->b;
    block_incref(b);
    data->ptr = b;
    data->size = b->size;
    return 0;
}

static PyObject *
hook_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    block *b = data->ptr;
    block_incref(b);
    return buffer_wrap(type, b);
}

static void
hook_free(TpShare_Data *data)
{
    block_decref(data->ptr);
}

static const TpShare_Hooks buffer_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_ZERO_COPY, "tpshare.Buffer",
    hook_share, hook_rebuild, hook_free,
};

/* ---------------------------------------------------------------------
 * Buffers that come back by id or by block (unpickling, CPython's
 * cross-interpreter data): see pytypes.h.
 */

PyObject *
tps_buffer_from_id(tps_module_state *state, int64_t id)
{
    block *b = block_lookup(id);
    if (b == NULL) {
        PyErr_Format(state->Error,
                     "no tpshare.Buffer with id %lld is alive in this "
                     "process: every holder of its memory let go",
                     (long long)id);
        return NULL;
    }
    return tps_buffer_get(state, b);
}

void *
tps_buffer_hold(PyObject *buf)
{
    block *b = ((Buffer *)buf)->b;
    block_incref(b);
    return b;
}

void
tps_buffer_retain(void *b)
{
    block_incref(b);
}

void
tps_buffer_release(void *b)
{
    block_decref(b);
}

PyObject *
tps_buffer_get(tps_module_state *state, void *b)
{
    int found;
    PyObject *cached = ptrmap_get(&state->buffer_cache, b, &found);
    if (found) {
        block_decref(b);
        return Py_NewRef(cached);
    }
    return buffer_wrap(state->BufferType, b);
}

int
tps_buffer_init_type(PyObject *module, tps_module_state *state)
{
    state->BufferType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &buffer_spec, NULL);
    if (state->BufferType == NULL
        || PyModule_AddType(module, state->BufferType) < 0)
    {
        return -1;
    }
    return tps_registry_register(state->BufferType, &buffer_hooks, 0);
}
