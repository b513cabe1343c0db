/* _probes.c - tpshare.bench._probes: the machine's floors that the
 * benchmarks print beside tpshare's figures.  Pure measurements of the
 * hardware and the kernel, with no Python and nothing of tpshare in the
 * timed part, kept out of the production extension:
 *
 *   _wake_floor(n, pause)   one-way wake-ups of a thread parked on a bare
 *                           POSIX semaphore (the wait tpshare's channels
 *                           end in);
 *   _line_round_trip(n)     one cache line bounced between two threads
 *                           pinned to two CPUs (what every hand-over
 *                           between two interpreters pays at least once);
 *   _copy_floor(size, n, pool)   one bare copy per message handed from
 *                           one CPU to another: the receiver's malloc,
 *                           memcpy out of the sender's payload and free
 *                           (what a copied message costs at least, with
 *                           no Python and no channel; _probes_copy.c);
 *   _sem_new(), _sem_post(slot, stamp), _sem_wait(slot, timeout),
 *   _sem_free(slot)         a bare semaphore that Python code in two
 *                           interpreters posts and waits on: the floor of
 *                           a wake-up between interpreters at the Python
 *                           level (both GILs, the calls, no channel).
 *
 * The first three run without the GIL and leave the calling thread as
 * it was; the semaphores wait without the GIL.
 *
 * One probe is not a measurement but a switch: _share_min(value) sets the
 * threshold the bytes and str handlers of tpshare._tpshare read (see
 * src/registry.h and _probes_copy.c), so that bench/bench_copy_sweep.py
 * can time the handler's own copy and share modes at every size.
 */
#define _GNU_SOURCE
#include "_probes.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Cache line size assumed for padding (x86-64 and most arm64). */
#define PROBE_LINE 64

static int64_t
probe_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A pause instruction in spin loops: lets the sibling hyperthread run. */
#if defined(__x86_64__) || defined(__i386__)
#define probe_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define probe_relax() __asm__ __volatile__("yield")
#else
#define probe_relax() ((void)0)
#endif

/* ---------------------------------------------------------------------
 * The floor for waking a parked thread: a bare semaphore between two
 * pthreads, the waiter parked long before the post.
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
        w->woke = probe_now_ns() - atomic_load(&w->stamp);
        sem_post(&w->done);
    }
}

PyDoc_STRVAR(wake_floor_doc,
"_wake_floor(n, pause, /)\n--\n\n"
"n one-way wake-ups of a thread parked on a bare POSIX semaphore, each\n"
"posted `pause` seconds after the previous one ended: a list of n\n"
"latencies in ns (post to the waiter running).  The machine's floor for\n"
"the benchmarks; runs without the GIL.");

/* args: borrowed.  New reference to a list, or NULL. */
static PyObject *
probes_wake_floor(PyObject *Py_UNUSED(module), PyObject *const *args,
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
            atomic_store(&w.stamp, probe_now_ns());
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

/* ---------------------------------------------------------------------
 * One cache line bounced between two threads pinned to two CPUs.
 */

typedef struct {
    _Alignas(PROBE_LINE) atomic_long turn;
    _Alignas(PROBE_LINE) long n;
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
        int64_t t0 = probe_now_ns();
        for (long i = 0; i < t->n; i++) {
            atomic_store_explicit(&t->turn, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&t->turn, memory_order_acquire)
                   != 2 * i + 2)
            {
                probe_relax();
            }
        }
        t->ns = probe_now_ns() - t0;
    }
    else {
        for (long i = 0; i < t->n; i++) {
            while (atomic_load_explicit(&t->turn, memory_order_acquire)
                   != 2 * i + 1)
            {
                if (atomic_load_explicit(&t->abort, memory_order_relaxed)) {
                    return NULL;
                }
                probe_relax();
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

/* arg: borrowed.  New reference to a float or None, or NULL. */
static PyObject *
probes_line_round_trip(PyObject *Py_UNUSED(module), PyObject *arg)
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
    line_trip *t = NULL;
    if (posix_memalign((void **)&t, PROBE_LINE, sizeof(line_trip)) != 0) {
        return PyErr_NoMemory();
    }
    memset(t, 0, sizeof(line_trip));
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

/* ---------------------------------------------------------------------
 * Semaphores for Python code in two interpreters.  A few process-wide
 * slots named by index (a module's state is per interpreter; the slots
 * are what both interpreters find).
 */

#define PROBE_SEMS 8

static struct {
    sem_t sem;
    atomic_llong stamp;          /* the poster's value, read by the waiter */
    atomic_int used;
} probe_sems[PROBE_SEMS];

/* The index in `arg` (borrowed) of a slot in use, else -1 with an
 * exception. */
static int
probe_sem_slot(PyObject *arg)
{
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (i < 0 || i >= PROBE_SEMS || !atomic_load(&probe_sems[i].used)) {
        PyErr_SetString(PyExc_ValueError, "not a semaphore slot in use");
        return -1;
    }
    return (int)i;
}

PyDoc_STRVAR(sem_new_doc,
"_sem_new(/)\n--\n\n"
"A new semaphore at 0: its slot number, which any interpreter of the\n"
"process may pass to _sem_post() and _sem_wait() until _sem_free().");

/* New reference to an int, or NULL. */
static PyObject *
probes_sem_new(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    for (int i = 0; i < PROBE_SEMS; i++) {
        int free_slot = 0;
        if (atomic_compare_exchange_strong(&probe_sems[i].used,
                                           &free_slot, 1))
        {
            if (sem_init(&probe_sems[i].sem, 0, 0) != 0) {
                atomic_store(&probe_sems[i].used, 0);
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            atomic_store(&probe_sems[i].stamp, 0);
            return PyLong_FromLong(i);
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "every semaphore slot is in use");
    return NULL;
}

PyDoc_STRVAR(sem_free_doc,
"_sem_free(slot, /)\n--\n\n"
"Destroy the semaphore in slot (no thread may be waiting on it).");

/* arg: borrowed.  New reference to None, or NULL. */
static PyObject *
probes_sem_free(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int i = probe_sem_slot(arg);
    if (i < 0) {
        return NULL;
    }
    sem_destroy(&probe_sems[i].sem);
    atomic_store(&probe_sems[i].used, 0);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_post_doc,
"_sem_post(slot, stamp, /)\n--\n\n"
"Store the int stamp and post the semaphore in slot, then yield the CPU\n"
"(the hand-over tpshare's channels make after waking a parked\n"
"receiver).");

/* args: borrowed.  New reference to None, or NULL. */
static PyObject *
probes_sem_post(PyObject *Py_UNUSED(module), PyObject *const *args,
                Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_sem_post(slot, stamp)");
        return NULL;
    }
    int i = probe_sem_slot(args[0]);
    if (i < 0) {
        return NULL;
    }
    long long stamp = PyLong_AsLongLong(args[1]);
    if (stamp == -1 && PyErr_Occurred()) {
        return NULL;
    }
    atomic_store(&probe_sems[i].stamp, stamp);
    sem_post(&probe_sems[i].sem);
    sched_yield();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sem_wait_doc,
"_sem_wait(slot, timeout, /)\n--\n\n"
"Wait without the GIL until the semaphore in slot is posted: the stamp\n"
"stored with the post.  TimeoutError after timeout seconds; signal\n"
"handlers run while waiting.");

/* args: borrowed.  New reference to an int, or NULL. */
static PyObject *
probes_sem_wait(PyObject *Py_UNUSED(module), PyObject *const *args,
                Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_sem_wait(slot, timeout)");
        return NULL;
    }
    int i = probe_sem_slot(args[0]);
    if (i < 0) {
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!(timeout >= 0 && timeout <= 3600)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be 0..3600 s");
        return NULL;
    }
    int64_t deadline = probe_now_ns() + (int64_t)(timeout * 1e9);
    struct timespec ts = {
        .tv_sec = (time_t)(deadline / 1000000000),
        .tv_nsec = (long)(deadline % 1000000000),
    };
    for (;;) {
        int rc, err;
        Py_BEGIN_ALLOW_THREADS
        rc = sem_clockwait(&probe_sems[i].sem, CLOCK_MONOTONIC, &ts);
        err = errno;
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            return PyLong_FromLongLong(atomic_load(&probe_sems[i].stamp));
        }
        if (err == ETIMEDOUT) {
            PyErr_SetString(PyExc_TimeoutError, "semaphore not posted");
            return NULL;
        }
        if (err != EINTR) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

static PyMethodDef probes_methods[] = {
    {"_wake_floor", _PyCFunction_CAST(probes_wake_floor), METH_FASTCALL,
     wake_floor_doc},
    {"_line_round_trip", probes_line_round_trip, METH_O,
     line_round_trip_doc},
    {"_copy_floor", _PyCFunction_CAST(tps_probe_copy_floor),
     METH_FASTCALL, tps_probe_copy_floor_doc},
    {"_share_min", _PyCFunction_CAST(tps_probe_share_min), METH_FASTCALL,
     tps_probe_share_min_doc},
    {"_sem_new", probes_sem_new, METH_NOARGS, sem_new_doc},
    {"_sem_free", probes_sem_free, METH_O, sem_free_doc},
    {"_sem_post", _PyCFunction_CAST(probes_sem_post), METH_FASTCALL,
     sem_post_doc},
    {"_sem_wait", _PyCFunction_CAST(probes_sem_wait), METH_FASTCALL,
     sem_wait_doc},
    {NULL},
};

/* No state: importable in any interpreter, each with its own GIL. */
static PyModuleDef_Slot probes_slots[] = {
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};

static struct PyModuleDef probes_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "tpshare.bench._probes",
    .m_doc = "The machine's floors for tpshare's benchmarks (a parked "
             "thread's wake-up, a cache line's round trip, a bare "
             "semaphore between interpreters, a bare copy per message) "
             "and the switch of the handlers' share threshold.",
    .m_size = 0,
    .m_methods = probes_methods,
    .m_slots = probes_slots,
};

PyMODINIT_FUNC
PyInit__probes(void)
{
    return PyModuleDef_Init(&probes_module);
}
