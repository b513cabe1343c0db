/* owner.c - the owner side: releases queued to their owner interpreter,
 * its counters, its exit.
 *
 * Every interpreter that uses tpshare gets a tps_interp, found through a
 * process-wide list keyed by interpreter ID (and a per-thread cache of the
 * last one used).  It holds the release list, the counters (owner-bound
 * records alive: `exports`; holders of them in other interpreters:
 * `remote`; of them in the token table or on their way out of it, and
 * those taken out of a channel that owner_reading.c could not count per
 * thread: `queued`; queued releases: `pending`), the threads of the
 * interpreter parked in tpshare, and what its exit hook (owner_exit.c)
 * needs.
 *
 * The steps of a release.  A record's last holder lets go in
 * tps_record_release() (record_release.c).  A neutral record is freed
 * there; an owner-bound one is freed there too when the current
 * interpreter is its owner, and otherwise pushed onto the owner's release
 * list here (tps_interp_push_release()): intrusive (linked through the
 * records) and lock-free, so a push never allocates, never fails and
 * never waits.  The push queues one coalesced pending call in the owner
 * (at most one per interpreter, so CPython's bounded pending-call queue
 * never overflows because of us) or wakes one of its parked threads
 * (chancore.c, tracker.c).  The owner drains the list (tps_interp_drain())
 * from that pending call, whenever it enters tpshare (tps_enter()), while
 * parked, and at exit (owner_exit.c); the drain calls tps_record_free()
 * (record_release.c) under the owner's GIL, which runs the registration's
 * free hook (registry/handlers_*.c or a third party's) and drops the
 * record's Python reference there.
 *
 * Why this state is process-wide: other interpreters push releases and
 * read counters.  It holds no PyObject* usable from another interpreter:
 * `module` is only touched under the owner's own GIL.
 */
#include "owner.h"
#include "fork.h"
#include "owner_layout.h"
#include "record.h"
#include "waiter.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

static struct {
    pthread_mutex_t mutex;
    tps_interp *list;
    void (*exit_callbacks[8])(int64_t);
    int nexit_callbacks;
} interps = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
};

static TPS_TLS struct {
    int64_t id;
    tps_interp *st;
} tls_interp = {-1, NULL};

/* ---------------------------------------------------------------------
 * Finding and creating states.
 */

static tps_interp *
interp_find_locked(int64_t id)
{
    TPS_ASSERT_LOCKED(&interps.mutex);
    for (tps_interp *st = interps.list; st != NULL; st = st->next) {
        if (st->id == id) {
            return st;
        }
    }
    return NULL;
}

/* A new state, or NULL with *err set to the errno value of what failed
 * (ENOMEM when memory ran out).  Under interps.mutex: raises nothing. */
static tps_interp *
state_new(int64_t id, int *err)
{
    pthread_condattr_t attr;
    int attr_made = 0, cond_made = 0;

    TPS_ASSERT_LOCKED(&interps.mutex);
    tps_interp *st = tps_calloc_lines(sizeof(tps_interp));
    if (st == NULL) {
        *err = ENOMEM;
        goto finally;
    }
    /* The exit hook's waits have CLOCK_MONOTONIC deadlines. */
    *err = pthread_condattr_init(&attr);
    if (*err != 0) {
        goto finally;
    }
    attr_made = 1;
    *err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (*err != 0) {
        goto finally;
    }
    *err = pthread_cond_init(&st->cond, &attr);
    if (*err != 0) {
        goto finally;
    }
    cond_made = 1;
    *err = pthread_mutex_init(&st->mutex, NULL);
    if (*err != 0) {
        goto finally;
    }
    tps_wlist_init(&st->watchers);
    st->id = id;
    st->alive = 1;
    atomic_init(&st->refcnt, 1);

finally:
    if (attr_made) {
        pthread_condattr_destroy(&attr);
    }
    if (*err != 0 && st != NULL) {
        if (cond_made) {
            pthread_cond_destroy(&st->cond);
        }
        free(st);
        st = NULL;
    }
    return st;
}

tps_interp *
tps_interp_current(void)
{
    int64_t id = tps_current_interp_id();
    if (tls_interp.id == id) {
        return tls_interp.st;
    }
    pthread_mutex_lock(&interps.mutex);
    tps_interp *st = interp_find_locked(id);
    int created = 0, err = 0;
    if (st == NULL && (st = state_new(id, &err)) != NULL) {
        st->next = interps.list;
        interps.list = st;
        created = 1;
    }
    pthread_mutex_unlock(&interps.mutex);
    if (st == NULL) {
        if (err == ENOMEM) {
            PyErr_NoMemory();
        }
        else {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return NULL;
    }
    if (created
        && tps_at_exit(PyInterpreterState_Get(), tps_interp_on_exit, st) < 0)
    {
        /* Without the hook the interpreter could die under live views:
         * refuse to work in it rather than risk that. */
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "tpshare could not register its exit hook");
        }
        tps_interp_unlist(st);
        tps_interp_decref(st);
        return NULL;
    }
    tls_interp.id = id;
    tls_interp.st = st;
    return st;
}

tps_interp *
tps_enter(void)
{
    tps_interp *st = tps_interp_current();
    if (st != NULL) {
        tps_interp_drain(st);
    }
    return st;
}

int64_t
tps_interp_id(const tps_interp *st)
{
    return st->id;
}

void
tps_interp_incref(tps_interp *st)
{
    atomic_fetch_add_explicit(&st->refcnt, 1, memory_order_relaxed);
}

void
tps_interp_decref(tps_interp *st)
{
    if (atomic_fetch_sub_explicit(&st->refcnt, 1, memory_order_acq_rel)
        != 1)
    {
        return;
    }
    /* Unlinked from interps.list at exit; nothing can find it now. */
    pthread_cond_destroy(&st->cond);
    pthread_mutex_destroy(&st->mutex);
    free(st);
}

void
tps_interp_export_add(tps_interp *st, long n)
{
    atomic_fetch_add_explicit(&st->exports, n, memory_order_relaxed);
}

void
tps_interp_wake_exit(tps_interp *st)
{
    pthread_mutex_lock(&st->mutex);
    if (atomic_load(&st->exiting)) {
        pthread_cond_broadcast(&st->cond);
    }
    pthread_mutex_unlock(&st->mutex);
}

/* Add n to a counter the exit hook waits on, and wake it when the
 * counter drops to zero.  The exit hook sets `exiting` before it reads
 * the counter; this side changes the counter before it reads `exiting`
 * (both sequentially consistent): one of them sees the other. */
static void
waited_add(tps_interp *st, atomic_long *counter, long n)
{
    long now = atomic_fetch_add(counter, n) + n;
    assert(now >= 0);
    if (now == 0 && n < 0 && atomic_load(&st->exiting)) {
        tps_interp_wake_exit(st);
    }
}

void
tps_interp_remote_add(tps_interp *st, long n)
{
    waited_add(st, &st->remote, n);
}

void
tps_interp_queued_add(tps_interp *st, long n)
{
    waited_add(st, &st->queued, n);
}

void
tps_interp_unsettled(tps_interp *st)
{
    atomic_store(&st->unsettled, 1);
}

void
tps_interp_requeued(tps_interp *st)
{
    /* The record is in its queue before this reads `exiting`; the exit
     * hook sets it before it settles the queues: either the settling
     * finds the record, or this sees `exiting` and asks for another. */
    if (atomic_load(&st->exiting)) {
        atomic_store(&st->rescan, 1);
        tps_interp_wake_exit(st);
    }
}

/* ---------------------------------------------------------------------
 * Release lists.
 */

/* The pending call: runs in the owner under its GIL.
 *
 * The `scheduled` flag says a call is queued and will drain.  It is
 * claimed (0 -> 1) by the pusher that queues the call, before queuing it,
 * and given back here before the list is taken: a push that still sees it
 * set has put its record on the list before this call takes the list, so
 * the drain below frees it; a push that lands after it was given back
 * queues a call of its own.  Setting the flag after queuing instead would
 * let this call run in between and leave the flag set with no call
 * queued: no release would ever be scheduled again. */
static int
drain_pending(void *Py_UNUSED(arg))
{
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        /* Out of memory (or no exit hook): raised in the code the
         * interpreter runs, as a failed pending call does, not dropped.
         * The releases wait for its next entry into tpshare. */
        return -1;
    }
    assert(tps_thread_state() != NULL);
    assert(tps_current_interp_id() == st->id);
    atomic_store(&st->scheduled, 0);
    tps_interp_drain(st);
    return 0;
}

/* Where the signal of a queued call can be lost (compat.h), a push that
 * finds this many releases waiting since the last drain signals again by
 * queuing another call (a spare: it drains as the first one would). */
#define RESIGNAL_EVERY 64

/* The caller keeps `st` alive across the call (the record's own reference
 * may be gone as soon as it is on the list: the owner can drain it). */
void
tps_interp_push_release(tps_interp *st, TpShare_Record *rec)
{
    long waiting = atomic_fetch_add(&st->pending, 1);
    int resignal = 0;
    TpShare_Record *head = atomic_load_explicit(&st->releases,
                                                memory_order_relaxed);
    do {
        rec->next_release = head;
    } while (!atomic_compare_exchange_weak(&st->releases, &head, rec));

    /* Fast path: a pending call is queued and has not yet given the flag
     * back, so it drains this push (see drain_pending); nobody is parked
     * to be woken, no exit waits. */
    if (atomic_load(&st->scheduled) && atomic_load(&st->nwatchers) == 0
        && !atomic_load(&st->exiting))
    {
        if (!TPS_PENDING_SIGNAL_CAN_BE_LOST || waiting == 0
            || waiting % RESIGNAL_EVERY != 0)
        {
            return;
        }
        resignal = 1;
    }
    pthread_mutex_lock(&st->mutex);
    if (atomic_load(&st->exiting)) {
        pthread_cond_broadcast(&st->cond);
    }
    else if (st->watchers.count > 0) {
        tps_wlist_wake(&st->watchers, 1);
    }
    else if (st->alive) {
        /* Claim the flag first: only the pusher that claims it queues a
         * call, and the call can give it back at any time after that. */
        int expected = 0;
        int claimed = atomic_compare_exchange_strong(&st->scheduled,
                                                     &expected, 1);
        /* The owner cannot finish exiting while we hold its mutex with
         * alive set, so the interpreter found here stays valid. */
        PyInterpreterState *interp = claimed || resignal
            ? _PyInterpreterState_LookUpID(st->id) : NULL;
        if (claimed
            && (interp == NULL
                || tps_add_pending_call(interp, drain_pending, NULL) != 0))
        {
            /* Not queued: give the flag back, so that the next push
             * tries again; meanwhile the owner drains on its next entry
             * into tpshare. */
            atomic_store(&st->scheduled, 0);
        }
        else if (!claimed && resignal && interp != NULL) {
            /* The call the flag stands for is still queued; this one
             * is a spare that signals the eval loop again (when the queue
             * is full, calls are queued anyway). */
            (void)tps_add_pending_call(interp, drain_pending, NULL);
        }
    }
    pthread_mutex_unlock(&st->mutex);
}

void
tps_interp_watch(tps_interp *st, tps_wnode *node)
{
    pthread_mutex_lock(&st->mutex);
    tps_wlist_push(&st->watchers, node);
    atomic_store(&st->nwatchers, st->watchers.count);
    pthread_mutex_unlock(&st->mutex);
}

void
tps_interp_unwatch(tps_interp *st, tps_wnode *node)
{
    pthread_mutex_lock(&st->mutex);
    tps_wlist_remove(&st->watchers, node);
    atomic_store(&st->nwatchers, st->watchers.count);
    pthread_mutex_unlock(&st->mutex);
}

void
tps_interp_tracker_waits(tps_interp *st, int delta)
{
    atomic_fetch_add(&st->tracker_waits, delta);
}

void
tps_interp_wake_watchers(tps_interp *st)
{
    /* Pairs with the waiter's count-then-check: either it sees what the
     * caller did before this call, or this call sees it counted. */
    if (atomic_load(&st->tracker_waits) == 0) {
        return;
    }
    pthread_mutex_lock(&st->mutex);
    tps_wlist_wake_all(&st->watchers);
    atomic_store(&st->nwatchers, st->watchers.count);
    pthread_mutex_unlock(&st->mutex);
}

int
tps_interp_has_pending(tps_interp *st)
{
    return atomic_load_explicit(&st->pending, memory_order_acquire) > 0;
}

void
tps_interp_drain(tps_interp *st)
{
    if (atomic_load_explicit(&st->pending, memory_order_acquire) == 0) {
        return;
    }
    TpShare_Record *rec = atomic_exchange(&st->releases, NULL);
    long n = 0;
    while (rec != NULL) {
        TpShare_Record *next = rec->next_release;
        tps_record_free(rec);
        rec = next;
        n++;
    }
    /* Pushers count before they push: the count never goes below the
     * length of the list. */
    atomic_fetch_sub(&st->pending, n);
    if (n > 0) {
        atomic_fetch_add_explicit(&st->drains, 1, memory_order_relaxed);
    }
}

unsigned long
tps_interp_drains(tps_interp *st)
{
    return atomic_load_explicit(&st->drains, memory_order_relaxed);
}

/* ---------------------------------------------------------------------
 * Exit callbacks (the exit itself is in owner_exit.c).
 */

int
tps_interp_add_exit_callback(void (*cb)(int64_t))
{
    int rc = 0;
    pthread_mutex_lock(&interps.mutex);
    int known = 0;
    for (int i = 0; i < interps.nexit_callbacks; i++) {
        known |= interps.exit_callbacks[i] == cb;
    }
    if (!known) {
        if (interps.nexit_callbacks
            == (int)Py_ARRAY_LENGTH(interps.exit_callbacks))
        {
            rc = -1;
        }
        else {
            interps.exit_callbacks[interps.nexit_callbacks++] = cb;
        }
    }
    pthread_mutex_unlock(&interps.mutex);
    return rc;
}

/* Run every exit callback for interpreter `id`: settle what it left in
 * the token table and in channels. */
void
tps_interp_run_exit_callbacks(int64_t id)
{
    pthread_mutex_lock(&interps.mutex);
    int n = interps.nexit_callbacks;
    pthread_mutex_unlock(&interps.mutex);
    for (int i = 0; i < n; i++) {
        interps.exit_callbacks[i](id);
    }
}

void
tps_interp_unlist(tps_interp *st)
{
    pthread_mutex_lock(&interps.mutex);
    for (tps_interp **p = &interps.list; *p; p = &(*p)->next) {
        if (*p == st) {
            *p = st->next;
            break;
        }
    }
    pthread_mutex_unlock(&interps.mutex);
    if (tls_interp.st == st) {
        tls_interp.id = -1;
        tls_interp.st = NULL;
    }
}

/* ---------------------------------------------------------------------
 * Module glue and stats.
 */

tps_module_state *
tps_interp_module_state(tps_interp *st)
{
    if (st->module == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "tpshare is not initialized in this interpreter");
        return NULL;
    }
    return PyModule_GetState(st->module);
}

void
tps_interp_set_module(tps_interp *st, PyObject *module)
{
    if (st->module == NULL) {
        st->module = Py_NewRef(module);
    }
}

PyObject *
tps_interp_stats(void)
{
    PyObject *res = PyDict_New();
    if (res == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&interps.mutex);
    size_t n = 0;
    for (tps_interp *st = interps.list; st; st = st->next) {
        n++;
    }
    long (*rows)[4] = PyMem_RawMalloc((n + 1) * sizeof(*rows));
    if (rows != NULL) {
        size_t i = 0;
        for (tps_interp *st = interps.list; st; st = st->next, i++) {
            rows[i][0] = (long)st->id;
            rows[i][1] = atomic_load(&st->exports);
            rows[i][2] = atomic_load(&st->remote);
            rows[i][3] = atomic_load(&st->pending);
        }
    }
    pthread_mutex_unlock(&interps.mutex);
    if (rows == NULL) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *key = PyLong_FromLong(rows[i][0]);
        PyObject *val = Py_BuildValue("{sl sl sl}", "exports", rows[i][1],
                                      "remote", rows[i][2],
                                      "pending", rows[i][3]);
        if (key == NULL || val == NULL
            || PyDict_SetItem(res, key, val) < 0)
        {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_CLEAR(res);
            break;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    PyMem_RawFree(rows);
    return res;
}

/* ---------------------------------------------------------------------
 * Stopping waits at exit, and fork().
 */

int
tps_interp_stop(int64_t id)
{
    pthread_mutex_lock(&interps.mutex);
    tps_interp *st = interp_find_locked(id);
    if (st != NULL) {
        tps_interp_incref(st);   /* its exit may run meanwhile */
    }
    pthread_mutex_unlock(&interps.mutex);
    if (st == NULL) {
        return -1;
    }
    assert(st->id == id && atomic_load(&st->refcnt) > 1);
    /* Set before the watchers' lock is taken: a watcher that registers
     * after the wake-up below sees the flag (tps_interp_is_stopping). */
    atomic_store(&st->stopping, 1);
    pthread_mutex_lock(&st->mutex);
    tps_wlist_wake_all(&st->watchers);
    atomic_store(&st->nwatchers, st->watchers.count);
    pthread_mutex_unlock(&st->mutex);
    tps_interp_decref(st);
    return 0;
}

tps_interp *
tps_interp_find(int64_t id)
{
    pthread_mutex_lock(&interps.mutex);
    tps_interp *st = interp_find_locked(id);
    if (st != NULL) {
        tps_interp_incref(st);
    }
    pthread_mutex_unlock(&interps.mutex);
    return st;
}

int
tps_interp_is_stopping(tps_interp *st)
{
    return atomic_load(&st->stopping);
}

/* Make a state's locks and wait list new (fork child). */
static void
state_reinit_locks(tps_interp *st)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&st->mutex, NULL);
    tps_wlist_init(&st->watchers);
    atomic_store(&st->nwatchers, 0);
    atomic_store(&st->tracker_waits, 0);
}

void
tps_interps_atfork(tps_fork_phase phase)
{
    switch (phase) {
    case TPS_FORK_PREPARE:
        /* Not the states' own mutexes: code under them calls into
         * CPython (a pending call), which holds its locks while it
         * forks. */
        pthread_mutex_lock(&interps.mutex);
        break;
    case TPS_FORK_PARENT:
        pthread_mutex_unlock(&interps.mutex);
        break;
    case TPS_FORK_CHILD: {
        /* Only the main interpreter lives on in the child (CPython
         * deletes the others without running their exit hooks).  The
         * states of the others leave the list: nothing is scheduled or
         * woken for them again, and the records that hold them keep
         * them as memory (never freed).  Every state's mutex may have
         * been held by a thread that is gone, and its watchers were
         * such threads. */
        int64_t main_id = PyInterpreterState_GetID(PyInterpreterState_Main());
        tps_interp **p = &interps.list;
        while (*p != NULL) {
            tps_interp *st = *p;
            state_reinit_locks(st);
            if (st->id == main_id) {
                /* A pending call queued before the fork may be lost:
                 * let the next push queue one again. */
                atomic_store(&st->scheduled, 0);
                p = &st->next;
            }
            else {
                st->alive = 0;
                *p = st->next;
                st->next = NULL;
            }
        }
        if (tls_interp.id != main_id) {
            tls_interp.id = -1;
            tls_interp.st = NULL;
        }
        tps_readers_atfork_child();
        pthread_mutex_unlock(&interps.mutex);
        break;
    }
    }
}
