/* workers.h - the table of interpreters tpshare made, for its two files
 * only: workers.c (the table, the threads that create, run and end
 * interpreters, and the caller-thread mode) and interpreter.c (the
 * _interp_* functions that tpshare/_interpreters.py calls).
 */
#ifndef TPSHARE_WORKERS_H
#define TPSHARE_WORKERS_H

#ifndef TPSHARE_BUILD_CORE
#error "workers.h is internal to tpshare"
#endif

#include "common.h"
#include "waiter.h"

typedef enum {
    TPS_W_STARTING,  /* being created, `init` running */
    TPS_W_RUNNING,   /* alive: its loop runs (threaded), or idle (caller) */
    TPS_W_ENDING,    /* being ended or abandoned: nothing new may start */
    TPS_W_DONE,      /* gone (or abandoned); the thread has returned */
    TPS_W_FAILED,    /* creation or `init` failed; the thread returned */
} tps_wstate;

/* One interpreter made by tpshare.  Every field is guarded by
 * tps_workers.mutex. */
typedef struct tps_worker {
    struct tps_worker *next;     /* in tps_workers.list */
    int64_t id;                  /* the runtime's interpreter ID, or -1 */
    int threaded;
    pthread_t thread;            /* valid when threaded */
    tps_wstate state;
    /* References: the table's (dropped by tps_worker_remove_locked) and
     * one per API call that waits with the table lock released.  Freed
     * at zero. */
    int refs;
    int listed;
    int running;                 /* threads running code in it now */
    int abandon;                 /* leave it to the runtime at exit */
    int interrupt;               /* raise SystemExit in running code */
    /* Raw memory owned by the entry: the code the thread runs, and the
     * text of the exception that made `init` fail (or ended `loop`). */
    char *init;
    char *loop;
    char *error;
    /* Threads waiting for a change of state or of `running`. */
    tps_wlist waiters;
    /* Caller-thread mode: the interpreter's first thread state, kept
     * detached for its whole life and used to end it (each run gets a
     * fresh one).  CPython 3.12 cannot make a thread state for an
     * interpreter left with none: it reuses the preallocated first one
     * without resetting it.  Set by tps_worker_start_here(), then touched
     * only by tps_worker_end_here(), after checking by ID that the
     * interpreter still exists.  NULL in threaded mode. */
    PyThreadState *keeper;
} tps_worker;

/* The process-wide table (workers.c says why it is process-wide). */
typedef struct {
    pthread_mutex_t mutex;       /* guards the list and every entry */
    tps_worker *list;
} tps_worker_table;

extern tps_worker_table tps_workers;

/* A copy of `s` in raw memory (PyMem_RawFree), or NULL. */
char *tps_raw_strdup(const char *s);

/* The table (lock held unless said).  tps_worker_new: a new unlisted
 * entry with one reference (no lock needed), or NULL.  unref: drop one
 * reference, freeing the entry at zero.  find: the listed entry for
 * interpreter `id`, or NULL.  remove: unlist it (dropping the table's
 * reference).  set_state: set the state and wake everyone waiting on
 * the entry. */
tps_worker *tps_worker_new(int threaded);
void tps_worker_unref_locked(tps_worker *w);
tps_worker *tps_worker_find_locked(int64_t id);
void tps_worker_remove_locked(tps_worker *w);
void tps_worker_set_state_locked(tps_worker *w, tps_wstate state);

/* Park the calling thread, whose waiter is `me` (set up by the caller
 * while it held its GIL), until the entry changes or `deadline_ns`
 * passes.  Called with the table lock held and no GIL; returns with the
 * lock held and a TPS_PARK_* code.  Callers re-check in a loop. */
int tps_worker_park_locked(tps_worker *w, tps_waiter *me,
                           int64_t deadline_ns);

/* The pending call that interrupts running work at exit; its argument
 * is the interpreter ID (intptr_t). */
int tps_worker_interrupt_call(void *arg);

/* The message of the SystemExit raised by the exit interrupt (the module
 * exports it as _EXIT_INTERRUPT_MESSAGE: a worker's unraisable hook
 * recognises it). */
#define TPS_EXIT_INTERRUPT_MESSAGE \
    "tpshare: interrupted because the process is exiting"


/* Threaded mode: start a thread that creates the interpreter of `w`,
 * runs its `init` and `loop` and ends it, with asynchronous signals
 * blocked.  0 or an errno value. */
int tps_worker_start_thread(tps_worker *w);

/* Caller-thread mode, each called with the caller's GIL and returning
 * with it.  start_here: create the interpreter in the calling thread and
 * run `init`; 0 (listed, TPS_W_RUNNING) or -1 with w->error set.
 * run_here: run `code` in `interp` on a fresh thread state; 0, or -1
 * with *error set (raw memory).  end_here: end it through its keeper; 0,
 * or -1 with an exception when it could not be looked up. */
int tps_worker_start_here(tps_worker *w);
int tps_worker_run_here(PyInterpreterState *interp, const char *code,
                        char **error);
int tps_worker_end_here(tps_worker *w);

#endif /* TPSHARE_WORKERS_H */
