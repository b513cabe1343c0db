/* _probes_copy.c - the copy sweep's and the 16 KiB comparison's probes of
 * tpshare.bench._probes (the module and its other probes: _probes.c):
 *
 *   _copy_floor(size, n, pool)   one bare copy per message handed from
 *                           one CPU to another, the floor of a copied
 *                           message with no Python and no channel;
 *   _share_min(value=None)  a switch, not a measurement: the threshold
 *                           the bytes and str handlers of tpshare._tpshare
 *                           read (src/registry.h), so that
 *                           bench/bench_copy_sweep.py can time the
 *                           handler's own copy and share modes at every
 *                           size.  It reaches the variable through the
 *                           address _tpshare exports for it
 *                           (tps_bytes_share_min_addr, found with dlsym in
 *                           the loaded library), as the production module
 *                           offers no way to change it.
 */
#define _GNU_SOURCE
#include "_probes.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Cache line size assumed for padding (x86-64 and most arm64). */
#define COPY_LINE 64

static int64_t
copy_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A pause instruction in spin loops: lets the sibling hyperthread run. */
#if defined(__x86_64__) || defined(__i386__)
#define copy_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define copy_relax() __asm__ __volatile__("yield")
#else
#define copy_relax() ((void)0)
#endif

/* ---------------------------------------------------------------------
 * One bare copy per message between two CPUs: the sender hands indexes
 * of pre-made payloads (cycling through a pool, as the benchmarks do)
 * over a single-producer ring; the receiver, on another CPU, mallocs
 * size bytes, copies the payload in and frees the copy.
 */

#define COPY_RING 64            /* slots of the hand-over ring */

typedef struct {
    _Alignas(COPY_LINE) atomic_long head;      /* written by the sender */
    _Alignas(COPY_LINE) atomic_long tail;      /* written by the receiver */
    _Alignas(COPY_LINE) long slot[COPY_RING];
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
        int64_t t0 = copy_now_ns();
        for (long i = 0; i < c->n; i++) {
            while (i - atomic_load_explicit(&c->tail, memory_order_acquire)
                   >= COPY_RING)
            {
                copy_relax();
            }
            c->slot[i % COPY_RING] = i % c->npool;
            atomic_store_explicit(&c->head, i + 1, memory_order_release);
        }
        while (atomic_load_explicit(&c->tail, memory_order_acquire) < c->n) {
            copy_relax();
        }
        c->ns = copy_now_ns() - t0;
        return NULL;
    }
    unsigned long check = 0;
    for (long i = 0; i < c->n; i++) {
        while (atomic_load_explicit(&c->head, memory_order_acquire) <= i) {
            if (atomic_load_explicit(&c->abort, memory_order_relaxed)) {
                return NULL;
            }
            copy_relax();
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

const char tps_probe_copy_floor_doc[] =

"_copy_floor(size, n, pool, /)\n--\n\n"
"ns per message of n messages handed from one pinned thread to another\n"
"(on the first two CPUs this thread may run on), the receiver making one\n"
"bare copy of each: malloc(size), memcpy out of one of `pool` payloads\n"
"the sender made beforehand (cycled through, as the benchmarks do),\n"
"free.  The floor of a copied message of that size with no Python and\n"
"no channel; None with fewer than two CPUs.  Runs without the GIL.";

/* args: borrowed.  New reference to a float or None, or NULL. */
PyObject *
tps_probe_copy_floor(PyObject *Py_UNUSED(module), PyObject *const *args,
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
    if (posix_memalign((void **)&c, COPY_LINE, sizeof(*c)) != 0) {
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

const char tps_probe_share_min_doc[] =

"_share_min(value=None, /)\n--\n\n"
"The size (bytes of data) from which tpshare's bytes and str handlers\n"
"share owner-bound instead of copying.  With a value, sets it for the\n"
"whole process and returns the previous one: 0 shares at every size,\n"
"sys.maxsize copies at every size, tpshare._tpshare._bytes_threshold()\n"
"restores the production setting.  For benchmarks only: set it while no\n"
"send is in flight.";

/* args: borrowed.  New reference to an int, or NULL. */
PyObject *
tps_probe_share_min(PyObject *Py_UNUSED(module), PyObject *const *args,
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
