/* fork.c - tpshare's process-wide state across fork().
 *
 * A forked child has one thread, the one that called fork(): the
 * parent's other threads are gone, with the locks they held, and CPython
 * deletes every interpreter but the main one.  tpshare's process-wide
 * state (the registry, the record depots, the interpreter states, the
 * channel table, the token table, the table of interpreters it made)
 * would then keep locks that nobody releases (a channel operation with a
 * timeout spun forever on one), wait lists of threads that do not exist,
 * and records of interpreters that do not exist.
 *
 * So, through pthread_atfork (registered once per process): before the
 * fork, the forking thread takes the leaf mutexes, those under which code
 * waits for nothing but memory, in one fixed order, so that the tables
 * they guard are copied whole; parent and child then release them (the
 * child's one thread is the one that took them); the child
 * re-initializes every other lock (channel spin locks, per-interpreter
 * mutexes, the workers' table), which a vanished thread may have held,
 * and makes unusable what
 * belonged to the parent: channels created before the fork fail with
 * ChannelClosed, tokens detached before it do not attach, the
 * interpreters tpshare made are forgotten (tpshare/_interpreters.py does
 * the same for their Python objects).  What the child creates afterwards
 * works fully.  Each file handles its own state (tps_*_atfork).
 *
 * Mutexes under which code calls into CPython (a per-interpreter state's,
 * the workers' table) are not taken before the fork: CPython 3.13 holds
 * its runtime lock while it forks, and a thread that waits for that lock
 * under one of them would never let the fork proceed.
 */
#include "fork.h"
#include "chancore.h"
#include "owner.h"
#include "pytypes.h"
#include "registry.h"

#include <errno.h>
#include <pthread.h>

/* The handlers, in the order PREPARE takes their mutexes. */
static void (*const handlers[])(tps_fork_phase) = {
    tps_registry_atfork,
    tps_interps_atfork,
    tps_channels_atfork,
    tps_tokens_atfork,
    tps_blocks_atfork,
    tps_workers_atfork,
};

#define NHANDLERS ((int)Py_ARRAY_LENGTH(handlers))

static void
prepare(void)
{
    for (int i = 0; i < NHANDLERS; i++) {
        handlers[i](TPS_FORK_PREPARE);
    }
}

static void
parent(void)
{
    for (int i = NHANDLERS - 1; i >= 0; i--) {
        handlers[i](TPS_FORK_PARENT);
    }
}

static void
child(void)
{
    for (int i = NHANDLERS - 1; i >= 0; i--) {
        handlers[i](TPS_FORK_CHILD);
    }
}

static pthread_once_t registered = PTHREAD_ONCE_INIT;
static int register_error;

static void
register_handlers(void)
{
    register_error = pthread_atfork(prepare, parent, child);
}

PyDoc_STRVAR(hold_channel_lock_doc,
"_hold_channel_lock(id, take, /)\n--\n\n"
"For tests: take (take true) or release the internal lock of channel\n"
"`id` from the calling thread, as a thread inside a channel operation\n"
"holds it.  Only operations with a timeout may then wait for it from\n"
"the same interpreter (they hold its GIL while they wait).");

static PyObject *
hold_channel_lock(PyObject *Py_UNUSED(module), PyObject *args)
{
    long long id;
    int take;

    if (!PyArg_ParseTuple(args, "Lp:_hold_channel_lock", &id, &take)) {
        return NULL;
    }
    if (tps_channel_test_lock(id, take) < 0) {
        PyErr_Format(PyExc_KeyError, "no channel with id %lld", id);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef fork_functions[] = {
    {"_hold_channel_lock", hold_channel_lock, METH_VARARGS,
     hold_channel_lock_doc},
    {NULL},
};

int
tps_fork_init(PyObject *module)
{
    pthread_once(&registered, register_handlers);
    if (register_error != 0) {
        errno = register_error;
        PyErr_SetFromErrno(PyExc_RuntimeError);
        return -1;
    }
    return PyModule_AddFunctions(module, fork_functions);
}
