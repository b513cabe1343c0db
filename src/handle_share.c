/* handle_share.c - what lets Channel, MemChannel and Queue handles cross
 * interpreters: the registry hooks, and pickling by id.
 *
 * A handle's record holds a reference to the channel (neutral: it
 * belongs to no interpreter) and rebuilds as a handle of the receiving
 * interpreter's own class, so a channel lives while any handle or record
 * holds it.  channel.c registers the types with these hooks.
 *
 * Pickling (handles and tpshare.Buffer) carries the id and a token of
 * the process: its pid and a random number drawn once per process image.
 * An id means something only in the process that gave it, so unpickling
 * elsewhere (another process, or a child made by fork() after the
 * pickle, which has the same random number but another pid) raises
 * instead of reaching whatever has that id there.  Unpickling gives the
 * interpreter's live object of that id when it has one (module_state.h,
 * handle_cache), as CPython's own queues do.
 */
#include "channel.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static int
handle_share(PyObject *obj, TpShare_Data *data)
{
    tps_channel *ch = ((tps_handle *)obj)->ch;
    tps_channel_incref(ch);
    data->ptr = ch;
    return 0;
}

static PyObject *
handle_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    tps_channel *ch = data->ptr;
    tps_channel_incref(ch);
    return tps_handle_wrap(type, ch);
}

static void
handle_free(TpShare_Data *data)
{
    tps_channel_decref(data->ptr);
}

const TpShare_Hooks tps_channel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Channel",
    handle_share, handle_rebuild, handle_free,
};

const TpShare_Hooks tps_memchannel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.MemChannel",
    handle_share, handle_rebuild, handle_free,
};

const TpShare_Hooks tps_queue_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Queue",
    handle_share, handle_rebuild, handle_free,
};


/* ---------------------------------------------------------------------
 * Pickling by id.
 */

static _Atomic uint64_t process_nonce;

/* The random half of the process token, drawn on first use (any
 * interpreter; the first to publish wins). */
static uint64_t
pickle_nonce(void)
{
    uint64_t n = atomic_load(&process_nonce);
    if (n != 0) {
        return n;
    }
    if (getrandom(&n, sizeof(n), GRND_NONBLOCK) != (ssize_t)sizeof(n)) {
        /* No entropy yet (early boot): the clock and the address space
         * still differ between processes. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        n = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec)
            ^ ((uint64_t)(uintptr_t)&process_nonce << 16);
    }
    if (n == 0) {
        n = 1;
    }
    uint64_t zero = 0;
    if (!atomic_compare_exchange_strong(&process_nonce, &zero, n)) {
        n = zero;
    }
    return n;
}

PyObject *
tps_pickle_reduce(PyObject *self, const char *kind, int64_t id)
{
    PyObject *module = PyType_GetModule(Py_TYPE(self));   /* borrowed */
    if (module == NULL) {
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(module, "_from_pickle");
    if (fn == NULL) {
        return NULL;
    }
    PyObject *res = Py_BuildValue("N(sLlK)", fn, kind, (long long)id,
                                  (long)getpid(),
                                  (unsigned long long)pickle_nonce());
    return res;
}

PyObject *
tps_handle_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    tps_module_state *state = tps_handle_state(self);
    static const char *const names[] = {"Channel", "MemChannel", "Queue"};
    return tps_pickle_reduce(self, names[tps_handle_kind(self, state)],
                             tps_channel_id(((tps_handle *)self)->ch));
}

PyDoc_STRVAR(from_pickle_doc,
"_from_pickle(kind, id, pid, nonce, /)\n--\n\n"
"Unpickle a tpshare.Channel, MemChannel, Queue or Buffer pickled by id\n"
"in this process: the interpreter's live object of that id, or a new\n"
"one.  tpshare.Error if it was pickled in another process or is gone.");

/* module: borrowed; new reference or NULL. */
static PyObject *
from_pickle(PyObject *module, PyObject *args)
{
    tps_module_state *state = PyModule_GetState(module);
    const char *kind;
    long long id;
    long pid;
    unsigned long long nonce;

    if (!PyArg_ParseTuple(args, "sLlK:_from_pickle", &kind, &id, &pid,
                          &nonce)) {
        return NULL;
    }
    if (pid != (long)getpid() || nonce != pickle_nonce()) {
        PyErr_Format(state->Error,
                     "this tpshare.%s was pickled in another process "
                     "(pid %ld): a %s is pickled by its id, which means "
                     "something only in the process that pickled it",
                     kind, pid, kind);
        return NULL;
    }
    if (strcmp(kind, "Buffer") == 0) {
        return tps_buffer_from_id(state, id);
    }
    tps_kind k;
    if (strcmp(kind, "Channel") == 0) {
        k = TPS_KIND_CHANNEL;
    }
    else if (strcmp(kind, "MemChannel") == 0) {
        k = TPS_KIND_MEM;
    }
    else if (strcmp(kind, "Queue") == 0) {
        k = TPS_KIND_QUEUE;
    }
    else {
        PyErr_Format(PyExc_ValueError, "no tpshare type %s is pickled by id",
                     kind);
        return NULL;
    }
    tps_channel *ch = tps_channel_lookup(id);
    if (ch == NULL) {
        PyErr_Format(state->Error,
                     "no tpshare.%s with id %lld is alive in this process: "
                     "every handle on it was dropped", kind, id);
        return NULL;
    }
    return tps_handle_get(state, k, ch);
}

static PyMethodDef pickle_methods[] = {
    {"_from_pickle", from_pickle, METH_VARARGS, from_pickle_doc},
    {NULL},
};

int
tps_handle_pickle_init(PyObject *module)
{
    return PyModule_AddFunctions(module, pickle_methods);
}
