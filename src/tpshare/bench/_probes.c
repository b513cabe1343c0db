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
 *                           no Python and no channel).
 *
 * These run without the GIL and leave the calling thread as it was.
 *
 * One probe is not a measurement but a switch: _share_min(value) sets the
 * threshold the bytes and str handlers of tpshare._tpshare read (see
 * src/registry.h), so that bench/bench_copy_sweep.py can time the
 * handler's own copy and share modes at every size.  It reaches the
 * variable through the address _tpshare exports for it
 * (tps_bytes_share_min_addr, found with dlsym in the loaded library), as
 * the production module offers no way to change it.
 */
#define _GNU_SOURCE
#include <Python.h>

#include <dlfcn.h>
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
 * One bare copy per message between two CPUs: the sender hands indexes
 * of pre-made payloads (cycling through a pool, as the benchmarks do)
 * over a single-producer ring; the receiver, on another CPU, mallocs
 * size bytes, copies the payload in and frees the copy.
 */

#define COPY_RING 64            /* slots of the hand-over ring */

typedef struct {
    _Alignas(PROBE_LINE) atomic_long head;      /* written by the sender */
    _Alignas(PROBE_LINE) atomic_long tail;      /* written by the receiver */
    _Alignas(PROBE_LINE) long slot[COPY_RING];
    char **pool;
    long npool;
    size_t size;
    long n;
    atomic_int abort;
    int cpu[2];
    int64_t ns;
    unsigned long check;        /* sum of copied bytes, so none is elided */
} copy_floor_state;

typedef struct {
    copy_floor_state *c;
    int side;
} copy_side;

static void *
copy_floor_side(void *arg)
{
    copy_floor_state *c = ((copy_side *)arg)->c;
    int side = ((copy_side *)arg)->side;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(c->cpu[side], &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (side == 0) {
        int64_t t0 = probe_now_ns();
        for (long i = 0; i < c->n; i++) {
            while (i - atomic_load_explicit(&c->tail, memory_order_acquire)
                   >= COPY_RING)
            {
                probe_relax();
            }
            c->slot[i % COPY_RING] = i % c->npool;
            atomic_store_explicit(&c->head, i + 1, memory_order_release);
        }
        while (atomic_load_explicit(&c->tail, memory_order_acquire) < c->n) {
            probe_relax();
        }
        c->ns = probe_now_ns() - t0;
        return NULL;
    }
    unsigned long check = 0;
    for (long i = 0; i < c->n; i++) {
        while (atomic_load_explicit(&c->head, memory_order_acquire) <= i) {
            if (atomic_load_explicit(&c->abort, memory_order_relaxed)) {
                return NULL;
            }
            probe_relax();
        }
        const char *src = c->pool[c->slot[i % COPY_RING]];
        char *dst = malloc(c->size);
        if (dst != NULL) {
            memcpy(dst, src, c->size);
            check += (unsigned char)dst[c->size - 1];
            free(dst);
        }
        atomic_store_explicit(&c->tail, i + 1, memory_order_release);
    }
    c->check = check;
    return NULL;
}

PyDoc_STRVAR(copy_floor_doc,
"_copy_floor(size, n, pool, /)\n--\n\n"
"ns per message of n messages handed from one pinned thread to another\n"
"(on the first two CPUs this thread may run on), the receiver making one\n"
"bare copy of each: malloc(size), memcpy out of one of `pool` payloads\n"
"the sender made beforehand (cycled through, as the benchmarks do),\n"
"free.  The floor of a copied message of that size with no Python and\n"
"no channel; None with fewer than two CPUs.  Runs without the GIL.");

/* args: borrowed.  New reference to a float or None, or NULL. */
static PyObject *
probes_copy_floor(PyObject *Py_UNUSED(module), PyObject *const *args,
                  Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_copy_floor(size, n, pool)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    long n = PyLong_AsLong(args[1]);
    long npool = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (size < 1 || size > (64 << 20) || n < 1 || n > 100000000
        || npool < 1 || npool > 4096)
    {
        PyErr_SetString(PyExc_ValueError,
                        "size 1..64 MiB, n 1..100000000, pool 1..4096");
        return NULL;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *res = NULL;
    copy_floor_state *c = NULL;
    if (posix_memalign((void **)&c, PROBE_LINE, sizeof(*c)) != 0) {
        return PyErr_NoMemory();
    }
    memset(c, 0, sizeof(*c));
    int found = 0;
    for (int k = 0; k < CPU_SETSIZE && found < 2; k++) {
        if (CPU_ISSET(k, &set)) {
            c->cpu[found++] = k;
        }
    }
    if (found < 2) {
        res = Py_NewRef(Py_None);
        goto finally;
    }
    c->pool = calloc((size_t)npool, sizeof(char *));
    if (c->pool == NULL) {
        PyErr_NoMemory();
        goto finally;
    }
    for (long k = 0; k < npool; k++) {
        c->pool[k] = malloc((size_t)size);
        if (c->pool[k] == NULL) {
            PyErr_NoMemory();
            goto finally;
        }
        memset(c->pool[k], (int)(k & 0xff), (size_t)size);
    }
    c->npool = npool;
    c->size = (size_t)size;
    c->n = n;
    copy_side sides[2] = {{c, 0}, {c, 1}};
    pthread_t th[2];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&th[1], NULL, copy_floor_side, &sides[1]);
    if (rc == 0) {
        rc = pthread_create(&th[0], NULL, copy_floor_side, &sides[0]);
        if (rc != 0) {
            atomic_store(&c->abort, 1);
        }
        else {
            pthread_join(th[0], NULL);
        }
        pthread_join(th[1], NULL);
    }
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        goto finally;
    }
    res = PyFloat_FromDouble((double)c->ns / (double)n);
finally:
    if (c->pool != NULL) {
        for (long k = 0; k < npool; k++) {
            free(c->pool[k]);
        }
        free(c->pool);
    }
    free(c);
    return res;
}

/* ---------------------------------------------------------------------
 * The handlers' share threshold, forced (see the top comment).
 */

/* The variable in the loaded tpshare._tpshare, found once: process-wide,
 * like the library itself, so one pointer serves every interpreter. */
static _Atomic(_Atomic Py_ssize_t *) share_min_var = NULL;

/* New reference: none.  The variable, or NULL with an exception. */
static _Atomic Py_ssize_t *
find_share_min(void)
{
    _Atomic Py_ssize_t *var = atomic_load(&share_min_var);
    if (var != NULL) {
        return var;
    }
    PyObject *mod = NULL, *file = NULL;
    mod = PyImport_ImportModule("tpshare._tpshare");
    if (mod == NULL) {
        goto finally;
    }
    file = PyObject_GetAttrString(mod, "__file__");
    const char *path = file != NULL ? PyUnicode_AsUTF8(file) : NULL;
    if (path == NULL) {
        goto finally;
    }
    /* Already loaded by the import: RTLD_NOLOAD only takes a reference
     * to it, which is kept (the library is never unloaded anyway). */
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    _Atomic Py_ssize_t *const *addr = NULL;
    if (lib != NULL) {
        addr = dlsym(lib, "tps_bytes_share_min_addr");
    }
    if (addr == NULL || *addr == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "tps_bytes_share_min_addr not found in %s", path);
        goto finally;
    }
    var = *addr;
    atomic_store(&share_min_var, var);
finally:
    Py_XDECREF(file);
    Py_XDECREF(mod);
    return var;
}

PyDoc_STRVAR(share_min_doc,
"_share_min(value=None, /)\n--\n\n"
"The size (bytes of data) from which tpshare's bytes and str handlers\n"
"share owner-bound instead of copying.  With a value, sets it for the\n"
"whole process and returns the previous one: 0 shares at every size,\n"
"sys.maxsize copies at every size, tpshare._tpshare._bytes_threshold()\n"
"restores the production setting.  For benchmarks only: set it while no\n"
"send is in flight.");

/* args: borrowed.  New reference to an int, or NULL. */
static PyObject *
probes_share_min(PyObject *Py_UNUSED(module), PyObject *const *args,
                 Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_share_min(value=None)");
        return NULL;
    }
    Py_ssize_t value = -1;
    if (nargs == 1 && args[0] != Py_None) {
        value = PyLong_AsSsize_t(args[0]);
        if (value == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (value < 0) {
            PyErr_SetString(PyExc_ValueError, "value must be >= 0");
            return NULL;
        }
    }
    _Atomic Py_ssize_t *var = find_share_min();
    if (var == NULL) {
        return NULL;
    }
    Py_ssize_t old = value < 0 ? atomic_load(var) : atomic_exchange(var, value);
    return PyLong_FromSsize_t(old);
}

static PyMethodDef probes_methods[] = {
    {"_wake_floor", _PyCFunction_CAST(probes_wake_floor), METH_FASTCALL,
     wake_floor_doc},
    {"_line_round_trip", probes_line_round_trip, METH_O,
     line_round_trip_doc},
    {"_copy_floor", _PyCFunction_CAST(probes_copy_floor), METH_FASTCALL,
     copy_floor_doc},
    {"_share_min", _PyCFunction_CAST(probes_share_min), METH_FASTCALL,
     share_min_doc},
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
             "thread's wake-up, a cache line's round trip, a bare copy "
             "per message) and the switch of the handlers' share "
             "threshold.",
    .m_size = 0,
    .m_methods = probes_methods,
    .m_slots = probes_slots,
};

PyMODINIT_FUNC
PyInit__probes(void)
{
    return PyModuleDef_Init(&probes_module);
}
