/* functions.c - the functions of the tpshare._tpshare module: share,
 * attach, is_shareable, registered, stats, drain, origin_id,
 * interpreter_id, and the private diagnostics the tests read (counters
 * of blocks and memo tables, the spin window).  module.c puts the table
 * (tps_module_methods) in the module definition.
 */
#include "module.h"
#include "waiter.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

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
    return tps_shared_new(tps_module_state_of(module), rec);
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
    return tps_attach(tps_module_state_of(module), token);
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
    tps_module_state *state = tps_module_state_of(module);
    Py_ssize_t origin = tps_identity_origin(state->identity, obj);
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

PyMethodDef tps_module_methods[] = {
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
