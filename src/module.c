/* module.c - the tpshare._tpshare extension module.
 *
 * Multi-phase initialization (PEP 489) with module state, importable in
 * isolated subinterpreters with their own GIL (PEP 684).  The first exec
 * in the process sets up the registry and its built-in handlers; every
 * exec makes the interpreter's own exception classes and heap types and
 * binds the interpreter's tps_interp state to this module.
 *
 * It also exports the C API table (TpShare_CAPI) as the capsule that
 * tpshare/__init__.py publishes as tpshare._C_API.  The table holds only
 * function pointers, so the same static table serves every interpreter.
 */
#include "tpshare_internal.h"
#include "waiter.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>



static inline tps_module_state *
get_state(PyObject *module)
{
    return (tps_module_state *)PyModule_GetState(module);
}

void
tps_set_not_shareable(const char *format, ...)
{
    va_list vargs;
    assert(!PyErr_Occurred());
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        return;     /* its error (MemoryError, ...) is raised instead */
    }
    tps_module_state *state = tps_interp_module_state(st);
    PyObject *exc_type = PyExc_TypeError;
    if (state != NULL) {
        exc_type = state->NotShareableError;
    }
    else {
        /* No tpshare module here (any more): raise its base, TypeError,
         * instead of the RuntimeError that says so. */
        assert(PyErr_ExceptionMatches(PyExc_RuntimeError));
        PyErr_Clear();
    }
    va_start(vargs, format);
    PyObject *msg = PyUnicode_FromFormatV(format, vargs);
    va_end(vargs);
    if (msg != NULL) {
        PyErr_SetObject(exc_type, msg);
        Py_DECREF(msg);
    }
}

/* ---------------------------------------------------------------------
 * The C API table.
 */

static int
capi_register(PyTypeObject *type, const TpShare_Hooks *hooks,
              unsigned int flags)
{
    return tps_registry_register(type, hooks, flags);
}

static int
capi_is_shareable(PyObject *obj)
{
    return tps_is_shareable(obj);
}

static TpShare_Record *
capi_share(PyObject *obj)
{
    return tps_share(obj);
}

static PyObject *
capi_rebuild(TpShare_Record *rec)
{
    return tps_rebuild(rec);
}

static int64_t
capi_owner(const TpShare_Record *rec)
{
    return rec->owner;
}

static void *
capi_malloc(size_t n)
{
    return PyMem_RawMalloc(n);
}

const TpShare_CAPI tps_capi = {
    .abi_version = TPSHARE_ABI_VERSION,
    .size = sizeof(TpShare_CAPI),
    .Register = capi_register,
    .Unregister = tps_registry_unregister,
    .Lookup = tps_registry_lookup,
    .IsShareable = capi_is_shareable,
    .Share = capi_share,
    .Rebuild = capi_rebuild,
    .Release = tps_record_release,
    .Owner = capi_owner,
    .Malloc = capi_malloc,
    .Free = PyMem_RawFree,
};

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
    return tps_shared_new(get_state(module), rec);
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
    return tps_attach(get_state(module), token);
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
    Py_ssize_t origin = tps_identity_origin(get_state(module)->identity, obj);
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
"_bytes_threshold(value=-1, /)\n--\n\n"
"Process-wide size from which bytes are shared owner-bound instead of\n"
"copied; set it when value >= 0.  Returns the value in force.  For the\n"
"benchmark that measures it.");

static PyObject *
mod_bytes_threshold(PyObject *Py_UNUSED(module), PyObject *const *args,
                    Py_ssize_t nargs)
{
    Py_ssize_t value = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "at most one argument");
        return NULL;
    }
    if (nargs == 1) {
        value = PyLong_AsSsize_t(args[0]);
        if (value == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(tps_bytes_threshold(value));
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

/* ---------------------------------------------------------------------
 * The machine's floor for waking a parked thread, for the benchmarks: a
 * bare semaphore between two pthreads, the waiter parked long before the
 * post (the same wait tpshare's channels end in), no Python involved.
 */

typedef struct {
    sem_t go;
    sem_t done;
    atomic_llong stamp;          /* monotonic ns of the post */
    long long woke;              /* ns from post to the waiter running */
    int stop;
} wake_floor_state;

static void *
wake_floor_waiter(void *arg)
{
    wake_floor_state *w = arg;
    for (;;) {
        while (sem_wait(&w->go) != 0) {
        }
        if (w->stop) {
            return NULL;
        }
        w->woke = tps_now_ns() - atomic_load(&w->stamp);
        sem_post(&w->done);
    }
}

PyDoc_STRVAR(wake_floor_doc,
"_wake_floor(n, pause, /)\n--\n\n"
"n one-way wake-ups of a thread parked on a bare POSIX semaphore, each\n"
"posted `pause` seconds after the previous one ended: a list of n\n"
"latencies in ns (post to the waiter running).  The machine's floor for\n"
"the benchmarks; runs without the GIL.");

static PyObject *
mod_wake_floor(PyObject *Py_UNUSED(module), PyObject *const *args,
               Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_wake_floor(n, pause)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    double pause = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (n < 1 || n > 1000000 || !(pause >= 0 && pause <= 1.0)) {
        PyErr_SetString(PyExc_ValueError,
                        "n must be 1..1000000, pause 0..1 s");
        return NULL;
    }
    long long *out = PyMem_RawMalloc((size_t)n * sizeof(long long));
    if (out == NULL) {
        return PyErr_NoMemory();
    }
    wake_floor_state w = {.stop = 0};
    pthread_t th;
    int made = 0;               /* semaphores initialized: go, then done */
    int rc = sem_init(&w.go, 0, 0) == 0 ? 0 : errno;
    if (rc == 0) {
        made = 1;
        rc = sem_init(&w.done, 0, 0) == 0 ? 0 : errno;
    }
    if (rc == 0) {
        made = 2;
    }
    Py_BEGIN_ALLOW_THREADS
    if (rc == 0) {
        rc = pthread_create(&th, NULL, wake_floor_waiter, &w);
    }
    if (rc == 0) {
        struct timespec ts = {
            .tv_sec = (time_t)pause,
            .tv_nsec = (long)((pause - (double)(time_t)pause) * 1e9),
        };
        for (Py_ssize_t i = 0; i < n; i++) {
            nanosleep(&ts, NULL);
            atomic_store(&w.stamp, tps_now_ns());
            sem_post(&w.go);
            while (sem_wait(&w.done) != 0) {
            }
            out[i] = w.woke;
        }
        w.stop = 1;
        sem_post(&w.go);
        pthread_join(th, NULL);
    }
    Py_END_ALLOW_THREADS
    if (made > 0) {
        sem_destroy(&w.go);
    }
    if (made > 1) {
        sem_destroy(&w.done);
    }
    PyObject *res = NULL;
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    else if ((res = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyLong_FromLongLong(out[i]);
            if (v == NULL) {
                Py_CLEAR(res);
                break;
            }
            PyList_SET_ITEM(res, i, v);
        }
    }
    PyMem_RawFree(out);
    return res;
}

/* _line_round_trip: one cache line bounced between two threads pinned to
 * two CPUs. */
typedef struct {
    _Alignas(TPS_LINE) atomic_long turn;
    _Alignas(TPS_LINE) long n;
    atomic_int abort;            /* side 0 could not start */
    int cpu[2];
    int64_t ns;
} line_trip;

typedef struct {
    line_trip *t;
    int side;
} line_side;

static void *
line_trip_side(void *arg)
{
    line_trip *t = ((line_side *)arg)->t;
    int side = ((line_side *)arg)->side;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(t->cpu[side], &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (side == 0) {
        int64_t t0 = tps_now_ns();
        for (long i = 0; i < t->n; i++) {
            atomic_store_explicit(&t->turn, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&t->turn, memory_order_acquire)
                   != 2 * i + 2)
            {
                tps_cpu_relax();
            }
        }
        t->ns = tps_now_ns() - t0;
    }
    else {
        for (long i = 0; i < t->n; i++) {
            while (atomic_load_explicit(&t->turn, memory_order_acquire)
                   != 2 * i + 1)
            {
                if (atomic_load_explicit(&t->abort, memory_order_relaxed)) {
                    return NULL;
                }
                tps_cpu_relax();
            }
            atomic_store_explicit(&t->turn, 2 * i + 2, memory_order_release);
        }
    }
    return NULL;
}

PyDoc_STRVAR(line_round_trip_doc,
"_line_round_trip(n, /)\n--\n\n"
"ns per round trip of one cache line bounced n times between two threads\n"
"pinned to the first two CPUs this thread may run on, or None with fewer\n"
"than two.  What every hand-over between two interpreters pays at least\n"
"once; on virtual machines it changes as the host moves the vCPUs.  The\n"
"calling thread is left as it was; runs without the GIL.");

static PyObject *
mod_line_round_trip(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 1 || n > 100000000) {
        PyErr_SetString(PyExc_ValueError, "n must be 1..100000000");
        return NULL;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    line_trip *t = tps_calloc_lines(sizeof(line_trip));
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++) {
        if (CPU_ISSET(c, &set)) {
            t->cpu[found++] = c;
        }
    }
    if (found < 2) {
        free(t);
        Py_RETURN_NONE;
    }
    t->n = n;
    line_side sides[2] = {{t, 0}, {t, 1}};
    pthread_t th[2];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&th[1], NULL, line_trip_side, &sides[1]);
    if (rc == 0) {
        rc = pthread_create(&th[0], NULL, line_trip_side, &sides[0]);
        if (rc != 0) {
            atomic_store(&t->abort, 1);
        }
        else {
            pthread_join(th[0], NULL);
        }
        pthread_join(th[1], NULL);
    }
    Py_END_ALLOW_THREADS
    double ns = (double)t->ns / (double)n;
    free(t);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyFloat_FromDouble(ns);
}

static PyMethodDef module_methods[] = {
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
    {"_bytes_threshold", _PyCFunction_CAST(mod_bytes_threshold),
     METH_FASTCALL, bytes_threshold_doc},
    {"_parked_drains", mod_parked_drains, METH_O, parked_drains_doc},
    {"_wake_floor", _PyCFunction_CAST(mod_wake_floor), METH_FASTCALL,
     wake_floor_doc},
    {"_block_counts", mod_block_counts, METH_NOARGS, block_counts_doc},
    {"_block_cached", mod_block_cached, METH_NOARGS, block_cached_doc},
    {"_memo_tables", mod_memo_tables, METH_NOARGS, memo_tables_doc},
    {"_spin_window", mod_spin_window, METH_NOARGS, spin_window_doc},
    {"_line_round_trip", mod_line_round_trip, METH_O, line_round_trip_doc},
    {NULL},
};

/* ---------------------------------------------------------------------
 * Module life cycle.
 */

/* Make the error class tpshare.<name>, a subclass of `base` (borrowed)
 * and, when queue_base is given, of queue.<queue_base>; store it (new
 * reference) in *slot and add it to the module.  0 or -1. */
static int
add_error(PyObject *module, PyObject **slot, const char *name,
          const char *doc, PyObject *base, const char *queue_base)
{
    PyObject *bases = NULL, *extra = NULL, *queue = NULL;
    char qualname[64];
    int rc = -1;

    if (queue_base != NULL) {
        queue = PyImport_ImportModule("queue");
        if (queue == NULL) {
            goto finally;
        }
        extra = PyObject_GetAttrString(queue, queue_base);
        if (extra == NULL) {
            goto finally;
        }
        bases = PyTuple_Pack(2, base, extra);
    }
    else {
        bases = PyTuple_Pack(1, base);
    }
    if (bases == NULL) {
        goto finally;
    }
    PyOS_snprintf(qualname, sizeof(qualname), "tpshare.%s", name);
    *slot = PyErr_NewExceptionWithDoc(qualname, doc, bases, NULL);
    if (*slot == NULL || PyModule_AddObjectRef(module, name, *slot) < 0) {
        goto finally;
    }
    rc = 0;
finally:
    Py_XDECREF(queue);
    Py_XDECREF(extra);
    Py_XDECREF(bases);
    return rc;
}

static int
module_exec(PyObject *module)
{
    tps_module_state *state = get_state(module);
    PyObject *bases = NULL, *capsule = NULL;
    int rc = -1;

    if (tps_registry_init() < 0) {
        goto finally;
    }
    state->Error = PyErr_NewExceptionWithDoc(
        "tpshare.Error", "Base class of tpshare's errors.", NULL, NULL);
    if (state->Error == NULL
        || PyModule_AddObjectRef(module, "Error", state->Error) < 0)
    {
        goto finally;
    }
    bases = PyTuple_Pack(2, state->Error, PyExc_TypeError);
    if (bases == NULL) {
        goto finally;
    }
    state->NotShareableError = PyErr_NewExceptionWithDoc(
        "tpshare.NotShareableError",
        "The object, or something inside it, cannot be shared.", bases,
        NULL);
    if (state->NotShareableError == NULL
        || PyModule_AddObjectRef(module, "NotShareableError",
                                 state->NotShareableError) < 0)
    {
        goto finally;
    }
    if (add_error(module, &state->ChannelClosed, "ChannelClosed",
                  "The channel is closed (and, for recv, empty).",
                  state->Error, NULL) < 0
        || add_error(module, &state->ChannelEmpty, "ChannelEmpty",
                     "recv timed out: no item.", state->Error, "Empty") < 0
        || add_error(module, &state->ChannelFull, "ChannelFull",
                     "send timed out: no room.", state->Error, "Full") < 0
        || add_error(module, &state->QueueEmpty, "QueueEmpty",
                     "Queue.get found no object in time.",
                     state->ChannelEmpty, NULL) < 0
        || add_error(module, &state->QueueFull, "QueueFull",
                     "Queue.put found no room in time.",
                     state->ChannelFull, NULL) < 0)
    {
        goto finally;
    }
    state->identity = tps_identity_new();
    if (state->identity == NULL) {
        goto finally;
    }
    if (tps_shared_init_type(module, state) < 0
        || tps_view_init_type(module, state) < 0
        || tps_tracker_init_type(module, state) < 0
        || tps_buffer_init_type(module, state) < 0
        || tps_channel_init_types(module, state) < 0
        || tps_interpreters_init(module) < 0
        || tps_fork_init(module) < 0)
    {
        goto finally;
    }
    if (tps_interp_add_exit_callback(tps_tokens_forget_interp) < 0
        || tps_interp_add_exit_callback(tps_channels_forget_interp) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "too many exit callbacks");
        goto finally;
    }
    capsule = PyCapsule_New((void *)&tps_capi, TPSHARE_CAPSULE_NAME, NULL);
    if (capsule == NULL
        || PyModule_AddObjectRef(module, "_C_API", capsule) < 0
        || PyModule_AddIntConstant(module, "ABI_VERSION",
                                   TPSHARE_ABI_VERSION) < 0)
    {
        goto finally;
    }
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        goto finally;
    }
    tps_interp_set_module(st, module);
    rc = 0;
finally:
    Py_XDECREF(capsule);
    Py_XDECREF(bases);
    return rc;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    tps_module_state *state = get_state(module);
    Py_VISIT(state->Error);
    Py_VISIT(state->NotShareableError);
    Py_VISIT(state->ChannelClosed);
    Py_VISIT(state->ChannelEmpty);
    Py_VISIT(state->ChannelFull);
    Py_VISIT(state->QueueType);
    Py_VISIT(state->QueueFull);
    Py_VISIT(state->QueueEmpty);
    Py_VISIT(state->SharedType);
    Py_VISIT(state->ViewType);
    Py_VISIT(state->TrackerType);
    Py_VISIT(state->ChannelType);
    Py_VISIT(state->MemChannelType);
    Py_VISIT(state->BufferType);
    Py_VISIT(state->ItemInterpreterDestroyed);
    for (int i = 0; i < 3; i++) {
        Py_VISIT(state->unbound[i]);
    }
    Py_VISIT(state->UnboundType);
    return 0;
}

static int
module_clear(PyObject *module)
{
    tps_module_state *state = get_state(module);
    Py_CLEAR(state->Error);
    Py_CLEAR(state->NotShareableError);
    Py_CLEAR(state->ChannelClosed);
    Py_CLEAR(state->ChannelEmpty);
    Py_CLEAR(state->ChannelFull);
    Py_CLEAR(state->QueueType);
    Py_CLEAR(state->QueueFull);
    Py_CLEAR(state->QueueEmpty);
    Py_CLEAR(state->SharedType);
    Py_CLEAR(state->ViewType);
    Py_CLEAR(state->TrackerType);
    Py_CLEAR(state->ChannelType);
    Py_CLEAR(state->MemChannelType);
    Py_CLEAR(state->BufferType);
    Py_CLEAR(state->ItemInterpreterDestroyed);
    for (int i = 0; i < 3; i++) {
        Py_CLEAR(state->unbound[i]);
    }
    Py_CLEAR(state->UnboundType);
    return 0;
}

static void
module_free(void *module)
{
    tps_module_state *state = get_state((PyObject *)module);
    module_clear((PyObject *)module);
    tps_identity_free(state->identity);
    state->identity = NULL;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    TPS_MOD_GIL_SLOT
    {0, NULL},
};

static struct PyModuleDef tpshare_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "tpshare._tpshare",
    .m_doc = "The C core of tpshare: share records, the type registry, "
             "release in the owner interpreter.",
    .m_size = sizeof(tps_module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__tpshare(void)
{
    return PyModuleDef_Init(&tpshare_module);
}
