/* owner.h - the owner side (owner.c, owner_exit.c): per-interpreter
 * state, the release list of each interpreter and its exit.
 */
#ifndef TPSHARE_OWNER_H
#define TPSHARE_OWNER_H

#ifndef TPSHARE_BUILD_CORE
#error "owner.h is internal to tpshare"
#endif

#include "common.h"
#include "module_state.h"

typedef struct tps_interp tps_interp;

/* The state of the current interpreter, created on first use.  Borrowed;
 * NULL with an exception on memory failure.  Needs the GIL. */
tps_interp *tps_interp_current(void);
int64_t tps_interp_id(const tps_interp *st);

/* Every Python-facing entry into tpshare starts here: the current
 * interpreter's state, after running the releases queued for it, so that
 * an interpreter that uses tpshare frees what others let go of.
 * Borrowed; NULL with an exception. */
tps_interp *tps_enter(void);

/* Hold/let go of an interpreter state (a record made in it holds one, so
 * the release list outlives the interpreter's exit for late frees). */
void tps_interp_incref(tps_interp *st);
void tps_interp_decref(tps_interp *st);

/* Counters of owner-bound records: alive, and holders of them in other
 * interpreters (which the owner's teardown waits for). */
void tps_interp_export_add(tps_interp *st, long n);
void tps_interp_remote_add(tps_interp *st, long n);

/* Owner-bound records of the interpreter that sit in the token table, or
 * were taken out of it (or out of a channel, by a thread that could not
 * count them itself: owner_reading.c) by a receiver that is not done
 * with them yet: the owner's exit settles those still queued and waits
 * for the others, like for remote holders.  Counted before a record
 * enters the table, so it is counted all the time another interpreter
 * may read it (tps_record_table_enter / tps_record_table_release). */
void tps_interp_queued_add(tps_interp *st, long n);
/* A record of the interpreter went (back) into a queue: if its exit is
 * waiting, it settles the queues again. */
void tps_interp_requeued(tps_interp *st);

/* The state of interpreter `id` with a reference the caller drops
 * (tps_interp_decref), or NULL when it has none (or its exit is over).
 * Any thread. */
tps_interp *tps_interp_find(int64_t id);
/* Wake the exit hook of `st` if it waits. */
void tps_interp_wake_exit(tps_interp *st);

/* Owner-bound records a receiver took out of a channel and is still
 * reading, counted per receiving thread (owner_reading.c).  The calling
 * thread's table (NULL: it has none, its records are counted in their
 * owners' `queued`); any thread. */
typedef struct tps_reader tps_reader;
extern TPS_TLS tps_reader *tps_reader_tls;
tps_reader *tps_reader_setup(void);
static inline tps_reader *
tps_reader_self(void)
{
    tps_reader *r = tps_reader_tls;
    return r != NULL ? r : tps_reader_setup();
}
/* Under the channel's lock, before the pop: the thread is taking records
 * out.  After the lock is let go, tps_reader_took() on what it took:
 * its owner-bound records are counted as being read until the thread
 * calls tps_record_queue_release() (record.h) on each, or
 * tps_reader_untake() when it puts one back into the ring (under the
 * lock, after it is there) and tps_reader_untaken() once the lock is let
 * go.  `r` may be NULL.  No GIL needed. */
void tps_reader_taking(tps_reader *r);
void tps_reader_took(tps_reader *r, TpShare_Record *const *recs,
                     Py_ssize_t n);
#define TPS_READ_SLOTS 6
typedef struct {
    long n[TPS_READ_SLOTS];      /* records to uncount per slot */
    int64_t owner[TPS_READ_SLOTS];
} tps_untaking;
void tps_reader_untake(tps_untaking *u, TpShare_Record *rec);
/* After the lock: what tps_reader_untake() left in `u` (zeroed before). */
void tps_reader_untaken(tps_untaking *u);
/* An exit begins (+1) or ends (-1) waiting on reading counts. */
void tps_reader_exit_waits(int delta);
/* Records of `owner` being read by any thread. */
long tps_reader_sum(int64_t owner);
/* An exit callback could not settle everything (no memory): the exit of
 * the current interpreter settles again later.  Needs its GIL. */
void tps_interp_unsettled(tps_interp *st);

/* Queue `rec` (whose refcount reached zero elsewhere) for freeing in its
 * owner.  Never fails; may run without any GIL; takes no lock unless a
 * pending call must be queued, a parked thread woken or an exit told.
 * The caller keeps `st` alive across the call. */
void tps_interp_push_release(tps_interp *st, TpShare_Record *rec);

/* Set whether the calling thread, parked in a channel wait, drains its
 * interpreter's releases (1, the default) or leaves them to its other
 * threads (0).  Returns the previous setting. */
int tps_thread_parked_drains(int flag);

/* Threads parked in tpshare register here (see waiter.h) so a release
 * pushed to their interpreter wakes one of them to drain it. */
struct tps_wnode;
void tps_interp_watch(tps_interp *st, struct tps_wnode *node);
void tps_interp_unwatch(tps_interp *st, struct tps_wnode *node);
/* Trackers: a thread counts itself in (delta +1) before it checks its
 * tracker and parks, out (-1) after; firing a tracker then wakes every
 * watcher, only while somebody waits on a tracker. */
void tps_interp_tracker_waits(tps_interp *st, int delta);
void tps_interp_wake_watchers(tps_interp *st);
int tps_interp_has_pending(tps_interp *st);

/* Free everything queued for the current interpreter.  Needs the GIL.
 * Cheap when the list is empty (one atomic load). */
void tps_interp_drain(tps_interp *st);
/* How many drains have freed something so far: a thread that was woken
 * to drain sees whether another thread of its interpreter did it. */
unsigned long tps_interp_drains(tps_interp *st);

/* The process has begun to exit: exit hooks stop waiting for remote
 * holders (as during finalization; see docs/design.md). */
void tps_interp_process_exiting(void);

/* Stop the waits of interpreter `id` (tpshare.Interpreter's at-exit
 * hook, through interpreter.c): from now on a tpshare wait in it (channel
 * send/recv, Tracker.wait) fails with TPS_ERR_EXITING instead of parking,
 * and the threads of it parked as watchers are woken.  Channel waits that
 * are not watching are woken by tps_channels_wake_all().  Returns 0, or
 * -1 when tpshare has no state for that interpreter.  Any thread. */
int tps_interp_stop(int64_t id);
/* Whether the waits of the interpreter of `st` were stopped.  A waiter
 * checks after it is on a wait list (under that list's lock), so that a
 * stop either sees it there or is seen by it. */
int tps_interp_is_stopping(tps_interp *st);

/* Run `cb(interp_id)` in every interpreter's exit hook, before it waits
 * for remote holders (used to drop what it left unclaimed).  Returns 0 or
 * -1 when the fixed table of callbacks is full. */
int tps_interp_add_exit_callback(void (*cb)(int64_t));

/* The current interpreter's tpshare module state (borrowed), or NULL
 * with RuntimeError; and the hook module exec uses to set it. */
tps_module_state *tps_interp_module_state(tps_interp *st);
void tps_interp_set_module(tps_interp *st, PyObject *module);

/* A dict of {interp id: {"exports", "remote", "pending"}}; new reference. */
PyObject *tps_interp_stats(void);

#endif /* TPSHARE_OWNER_H */
