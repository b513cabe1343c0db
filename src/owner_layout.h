/* owner_layout.h - the fields of an interpreter's tpshare state, for
 * the owner side's two files only: owner.c (the state, its release list
 * and counters) and owner_exit.c (its exit hook).  Everything else uses
 * the functions of tpshare_internal.h.
 */
#ifndef TPSHARE_OWNER_LAYOUT_H
#define TPSHARE_OWNER_LAYOUT_H

#ifndef TPSHARE_BUILD_CORE
#error "owner_layout.h is internal to tpshare"
#endif

#include "cacheline.h"
#include "owner.h"
#include "waiter.h"

struct tps_interp {
    /* Written by other interpreters' threads, on every release: one cache
     * line of its own, so the owner's own counters do not bounce with it. */
    _Alignas(TPS_LINE) _Atomic(TpShare_Record *) releases;  /* the release list
                                                          (LIFO, lock-free
                                                          push) */
    atomic_long pending;         /* pushed and not yet drained */
    atomic_int scheduled;        /* a pending call is queued */
    atomic_int nwatchers;        /* watchers.count, readable unlocked */
    atomic_int exiting;          /* the exit hook is waiting */
    /* One for being alive (dropped at exit) plus one per bound record. */
    atomic_long refcnt;
    atomic_long remote;
    atomic_long queued;          /* see tps_interp_queued_add() */
    atomic_int rescan;           /* a record went back into a queue
                                    while the exit hook waits */
    atomic_int unsettled;        /* an exit callback ran out of memory */
    /* The owner's side. */
    _Alignas(TPS_LINE) atomic_long exports;
    atomic_ulong drains;         /* drains that freed something */
    atomic_int tracker_waits;    /* watchers waiting on a Tracker */
    tps_interp *next;            /* in interps.list */
    int64_t id;
    pthread_mutex_t mutex;       /* guards the fields below, and the slow
                                    path of a push */
    pthread_cond_t cond;         /* signalled on push and remote == 0 */
    int alive;                   /* cleared when the exit hook finishes */
    /* Threads of this interpreter parked in tpshare (channel waits,
     * tracker waits): a release pushed here wakes one of them to drain
     * it at once, so a blocked interpreter is not an idle one. */
    tps_wlist watchers;
    /* The interpreter's tpshare module: a strong reference of the owner's
     * own, touched under its GIL only, cleared by the exit hook. */
    PyObject *module;
    /* Set once by tps_interp_stop(): tpshare waits in the interpreter
     * fail instead of parking. */
    atomic_int stopping;
};

/* The exit hook CPython runs for the interpreter of `arg` (its
 * tps_interp), registered when the state is created (owner_exit.c). */
void tps_interp_on_exit(void *arg);

/* Run every exit callback for interpreter `id`: settle what it left in
 * the token table and in channels. */
void tps_interp_run_exit_callbacks(int64_t id);

/* Take `st` off the process-wide list and the calling thread's cache: no
 * lookup finds it any more. */
void tps_interp_unlist(tps_interp *st);

/* In a fork child (owner.c's fork handler): the reading tables of the
 * parent's other threads are cleared and free for new threads (one may
 * have been busy at the fork), owner_reading.c. */
void tps_readers_atfork_child(void);

#endif /* TPSHARE_OWNER_LAYOUT_H */
