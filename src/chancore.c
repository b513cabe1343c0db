/* chancore.c - the channel core: FIFOs of share records between
 * interpreters.
 *
 * A channel is a ring of records with an optional capacity, one lock,
 * and two wait lists (receivers, senders).  It knows nothing about Python
 * types: MemChannel and the Object Channel (channel.c) put records in and
 * take them out; what a record holds is their business.
 *
 * Blocking.  send/recv try once with the GIL held; if they must
 * wait they release the GIL, spin on the item count (no lock) for an
 * adaptive window (waiter.h), then park on a per-thread semaphore with a
 * monotonic deadline.  A parked thread is also on its interpreter's
 * release-waiter list, so releases pushed to it while it waits are
 * drained: by another thread of the interpreter if one is running
 * and drains them within a grace period, else by the parked thread.  A
 * signal ends the park so Ctrl-C is handled promptly in the main thread.
 * A send that posted a parked receiver of another interpreter yields its
 * CPU once the lock is let go (tps_handoff(), waiter.h), so that the
 * receiver the kernel woke on the sender's CPU runs at once.
 * Blocked senders resume only once the ring has drained below a
 * low-water mark (maxsize - maxsize/8): without that hysteresis both
 * sides fall into lock-step on a full ring.
 *
 * Closing.  close() wakes every waiter.  Queued items can still be
 * received; then recv fails with TPS_ERR_CLOSED, and send fails at once.
 * When the last reference to a channel goes, every unreceived record is
 * released (in its owner).
 *
 * A sender's exit (chanexit.c).  Owner-bound items an exiting
 * interpreter sent and that are still queued are replaced in place by
 * neutral copies or as the unbounditems policy says.
 *
 * The ring itself (ring.h, ring.c) is a growing FIFO of records under the
 * channel's lock (spinlock.h).
 *
 * fork() (fork.c).  In the child, every channel created before the fork
 * is FORKED: send and recv fail at once, and its items and waiters,
 * which belong to the parent, are forgotten.  Every lock wait is bounded
 * by the caller's timeout.
 *
 * Exit (tpshare.Interpreter's at-exit hook).  Waits of an interpreter
 * being stopped fail with TPS_ERR_EXITING instead of parking; the hook
 * wakes every parked waiter so that those re-check.
 *
 * Why the channel table is process-wide: channels are found by ID from
 * any interpreter.  It holds records and raw memory, no PyObject*.
 */
#include "chancore.h"
#include "chancore_layout.h"
#include "fork.h"
#include "item.h"
#include "owner.h"
#include "ptrmap.h"
#include "record.h"
#include "waiter.h"

typedef enum { SENDING, RECEIVING } direction;

_Static_assert(offsetof(tps_channel, received) + sizeof(uint64_t)
               <= offsetof(tps_channel, lock) + TPS_LINE,
               "what every operation writes is on the lock's line");

/* Values of `closed`.  FORKED: this is a child process and the channel
 * was created before the fork (see tps_channels_atfork). */
enum { OPEN = 0, CLOSED = 1, FORKED = 2 };

static struct {
    pthread_mutex_t mutex;
    ptrmap byid;                 /* id -> channel (the table's reference) */
    int64_t next_id;
} channels = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .next_id = 16,               /* keys 0, 1 and 2 are reserved by ptrmap */
};

#define KEY(id) ((void *)(uintptr_t)(id))

/* ---------------------------------------------------------------------
 * Life cycle.
 */

tps_channel *
tps_channel_new(Py_ssize_t maxsize, int64_t spin_ns, unsigned int flags)
{
    tps_channel *ch = tps_calloc_lines(sizeof(tps_channel));
    if (ch == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    tps_lock_init(&ch->lock);
    atomic_init(&ch->cpu[0], -1);
    atomic_init(&ch->cpu[1], -1);
    tps_wlist_init(&ch->receivers);
    tps_wlist_init(&ch->senders);
    ch->maxsize = maxsize;
    ch->spin_ns = spin_ns;
    ch->flags = flags;
    ch->refcnt = 1;
    if (maxsize > 0) {
        /* Bounded rings are allocated and touched up front: no page
         * faults or growth in the transfer loop. */
        size_t cap = 16;
        while (cap < (size_t)maxsize && cap < ((size_t)1 << 20)) {
            cap *= 2;
        }
        ch->ring.slots = PyMem_RawCalloc(cap, sizeof(TpShare_Record *));
        if (ch->ring.slots == NULL) {
            goto error;
        }
        ch->ring.cap = cap;
    }
    pthread_mutex_lock(&channels.mutex);
    ch->id = channels.next_id++;
    int rc = ptrmap_set(&channels.byid, KEY(ch->id), ch);
    pthread_mutex_unlock(&channels.mutex);
    if (rc < 0) {
        goto error;
    }
    return ch;

error:
    tps_ring_free(&ch->ring);
    free(ch);
    PyErr_NoMemory();
    return NULL;
}

tps_channel *
tps_channel_lookup(int64_t id)
{
    int found;
    pthread_mutex_lock(&channels.mutex);
    tps_channel *ch = ptrmap_get(&channels.byid, KEY(id), &found);
    if (ch != NULL) {
        ch->refcnt++;
    }
    pthread_mutex_unlock(&channels.mutex);
    return ch;
}

void
tps_channel_incref(tps_channel *ch)
{
    pthread_mutex_lock(&channels.mutex);
    ch->refcnt++;
    pthread_mutex_unlock(&channels.mutex);
}

/* Release every queued record (no other thread can reach `ch`). */
static void
release_all(tps_channel *ch)
{
    size_t n = tps_ring_count(&ch->ring);
    for (size_t i = 0; i < n; i++) {
        tps_item_release(*tps_ring_at(&ch->ring, i));
    }
}

void
tps_channel_decref(tps_channel *ch)
{
    pthread_mutex_lock(&channels.mutex);
    int last = --ch->refcnt == 0;
    if (last) {
        ptrmap_del(&channels.byid, KEY(ch->id));
    }
    pthread_mutex_unlock(&channels.mutex);
    if (!last) {
        return;
    }
    /* No handle is left, so no thread waits on it. */
    release_all(ch);
    tps_ring_free(&ch->ring);
    free(ch);
}

int64_t
tps_channel_id(const tps_channel *ch)
{
    return ch->id;
}

unsigned int
tps_channel_flags(const tps_channel *ch)
{
    return ch->flags;
}

Py_ssize_t
tps_channel_maxsize(const tps_channel *ch)
{
    return ch->maxsize;
}

Py_ssize_t
tps_channel_count(tps_channel *ch)
{
    return (Py_ssize_t)atomic_load(&ch->ring.count);
}

int
tps_channel_is_closed(tps_channel *ch)
{
    return atomic_load(&ch->closed);
}

void
tps_channel_close(tps_channel *ch)
{
    tps_lock_acquire(&ch->lock);
    /* A FORKED channel stays so: its error says why it is unusable. */
    int open = OPEN;
    atomic_compare_exchange_strong(&ch->closed, &open, CLOSED);
    tps_wlist_wake_all(&ch->receivers);
    tps_wlist_wake_all(&ch->senders);
    tps_lock_release(&ch->lock);
}

void
tps_channel_counters(tps_channel *ch, uint64_t out[5])
{
    tps_lock_acquire(&ch->lock);
    out[0] = ch->sent;
    out[1] = ch->received;
    out[2] = ch->dropped;
    out[3] = ch->parked[SENDING];
    out[4] = ch->parked[RECEIVING];
    tps_lock_release(&ch->lock);
}

/* ---------------------------------------------------------------------
 * Room and wake-ups (lock held).
 */

static inline int
can_send(tps_channel *ch, Py_ssize_t n)
{
    long count = atomic_load_explicit(&ch->ring.count, memory_order_relaxed);
    return ch->maxsize == 0 || count == 0 || count + n <= ch->maxsize;
}

void
tps_channel_wake_senders(tps_channel *ch)
{
    if (ch->senders.count == 0) {
        return;
    }
    Py_ssize_t low = ch->maxsize - (ch->maxsize / 8 > 1 ? ch->maxsize / 8 : 1);
    if (atomic_load(&ch->ring.count) <= low) {
        tps_wlist_wake_all(&ch->senders);
    }
}

/* ---------------------------------------------------------------------
 * Waiting.
 */


/* Whether the operation can proceed, or must stop (closed), seen without
 * the lock: a hint for spinning. */
static inline int
worth_locking(tps_channel *ch, direction dir, Py_ssize_t n)
{
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        return 1;
    }
    return dir == RECEIVING
        ? atomic_load_explicit(&ch->ring.count, memory_order_relaxed) > 0
        : can_send(ch, n);
}

struct spin_arg {
    tps_channel *ch;
    direction dir;
    Py_ssize_t n;
};

static int
channel_spin_ready(void *arg)
{
    struct spin_arg *a = arg;
    return worth_locking(a->ch, a->dir, a->n);
}

/* Whether the channel is closed, with *rc set to the error if so. */
static inline int
closed_error(tps_channel *ch, int *rc)
{
    int closed = atomic_load(&ch->closed);
    if (closed != OPEN) {
        *rc = closed == FORKED ? TPS_ERR_FORKED : TPS_ERR_CLOSED;
    }
    return closed != OPEN;
}

/* The ID of the calling thread's interpreter (GIL held): what its
 * parked peers compare theirs with (tps_wnode.interp). */
static inline int64_t
self_interp(void)
{
    return PyInterpreterState_GetID(PyInterpreterState_Get());
}

/* One attempt with the lock held.  Returns 1 when done (*rc set), 0 to
 * keep waiting.  *handoff is set when a send posted a parked receiver
 * that runs in an interpreter other than the caller's, *interp (< 0:
 * not looked up yet, and the caller holds its GIL), for tps_handoff()
 * once the lock is let go. */
static int
attempt(tps_channel *ch, direction dir, TpShare_Record **recs, Py_ssize_t n,
        Py_ssize_t *got, int *rc, tps_reader *r, int64_t *interp,
        int *handoff)
{
    if (dir == RECEIVING) {
        if (atomic_load(&ch->ring.count) > 0) {
            atomic_store_explicit(&ch->cpu[RECEIVING], sched_getcpu(),
                                  memory_order_relaxed);
            tps_reader_taking(r);
            *got = tps_ring_pop(&ch->ring, recs, n);
            ch->received += (uint64_t)*got;
            tps_channel_wake_senders(ch);
            *rc = 0;
            return 1;
        }
        if (closed_error(ch, rc)) {
            return 1;
        }
        return 0;
    }
    if (closed_error(ch, rc)) {
        return 1;
    }
    if (can_send(ch, n)) {
        if (tps_ring_reserve(&ch->ring, (size_t)n) < 0) {
            *rc = TPS_ERR_NOMEM;
            return 1;
        }
        atomic_store_explicit(&ch->cpu[SENDING], sched_getcpu(),
                              memory_order_relaxed);
        tps_ring_push(&ch->ring, recs, n);
        ch->sent += (uint64_t)n;
        if (ch->receivers.count > 0) {
            /* Looked up only here: most sends find no one parked. */
            if (*interp < 0) {
                *interp = self_interp();
            }
            tps_wlist_wake_from(&ch->receivers,
                                (int)(n < INT32_MAX ? n : INT32_MAX),
                                *interp, handoff);
        }
        *rc = 0;
        return 1;
    }
    return 0;
}

/* Whether this thread drains its interpreter's releases while parked in
 * a channel wait (see tps_thread_parked_drains()). */
static TPS_TLS int no_parked_drains;

int
tps_thread_parked_drains(int flag)
{
    int old = !no_parked_drains;
    no_parked_drains = !flag;
    return old;
}

/* Releases for this interpreter are waiting and a parked thread was
 * woken for them.  Another thread of the interpreter may be running
 * Python and drain them any moment (on its next tpshare call or by the
 * pending call queued for it); taking the GIL from that thread for every
 * release costs both of them dearly.  So a grace period first, parked
 * but not watching: only if nobody drained during it does this thread
 * drain.  While another thread keeps draining, the grace doubles (up to
 * a cap), so a busy interpreter's parked thread wakes rarely: 200 us,
 * doubled up to 3.2 ms while another thread keeps draining. */
#define DRAIN_GRACE_NS 200000
#define DRAIN_GRACE_MAX_NS 3200000

typedef struct {
    int64_t until;               /* < 0: not in a grace period */
    int64_t length;
    unsigned long drains_seen;
} drain_grace;

/* After a park: whether this thread must drain now (a grace period
 * ended and nobody else drained).  `watching`: the park was also a watch
 * of the release list. */
static int
grace_after_park(drain_grace *g, tps_interp *st, int watching, int why)
{
    if (g->until < 0) {
        /* Woken while watching and the channel not ready yet (the next
         * attempt tells): most likely by a release. */
        if (watching && why == TPS_PARK_WOKEN) {
            g->until = tps_now_ns() + g->length;
            g->drains_seen = tps_interp_drains(st);
        }
        return 0;
    }
    if (tps_now_ns() < g->until) {
        return 0;
    }
    int others = tps_interp_drains(st) != g->drains_seen;
    g->length = others && g->length < DRAIN_GRACE_MAX_NS
                ? 2 * g->length : DRAIN_GRACE_NS;
    g->until = -1;
    return !others && tps_interp_has_pending(st);
}

/* After a successful attempt, with the lock let go: a receiver counts
 * what it took out (record_release.c). */
static inline void
attempt_done(direction dir, TpShare_Record **recs, Py_ssize_t *got,
             int rc, tps_reader *r)
{
    if (dir == RECEIVING && rc == 0) {
        tps_reader_took(r, recs, *got);
    }
}

/* Send or receive, waiting up to timeout_ns (< 0: forever).  Called with
 * the GIL; released while waiting.  Returns 0 or a TPS_ERR_* code;
 * TPS_ERR_SIGNAL comes with the exception a signal handler raised. */
static int
transfer(tps_channel *ch, direction dir, TpShare_Record **recs, Py_ssize_t n,
         Py_ssize_t *got, int64_t timeout_ns)
{
    int rc = 0;
    const int timed_out = dir == RECEIVING ? TPS_ERR_EMPTY : TPS_ERR_FULL;
    tps_reader *r = dir == RECEIVING ? tps_reader_self() : NULL;
    int64_t interp = -1;         /* self_interp(), once needed */
    int handoff = 0;

    assert(tps_thread_state() != NULL);   /* holds the GIL */
    assert(n > 0);
    /* Every lock wait is bounded by the caller's timeout: a lock that
     * cannot be had in time ends the operation like the timeout. */
    if (tps_lock_acquire_for(&ch->lock, timeout_ns) < 0) {
        return timed_out;
    }
    int done = attempt(ch, dir, recs, n, got, &rc, r, &interp, &handoff);
    tps_lock_release(&ch->lock);
    if (done) {
        if (handoff) {
            tps_handoff();
        }
        attempt_done(dir, recs, got, rc, r);
        return rc;
    }
    if (timeout_ns == 0) {
        return timed_out;
    }

    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        return TPS_ERR_PYTHON;
    }
    tps_waiter *w = tps_waiter_self();
    if (w == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return TPS_ERR_PYTHON;
    }
    int64_t now = tps_now_ns();
    int64_t deadline = timeout_ns < 0 ? -1 : now + timeout_ns;
    if (interp < 0) {
        interp = self_interp();  /* before the GIL goes */
    }
    tps_wnode node = {.waiter = w, .interp = interp};
    tps_wnode inode = {.waiter = w, .interp = interp};
    tps_wlist *list = dir == RECEIVING ? &ch->receivers : &ch->senders;

    PyThreadState *ts = PyEval_SaveThread();
    int64_t spin_until = now + tps_spin_window(ch->spin_ns);
    if (deadline >= 0 && spin_until > deadline) {
        spin_until = deadline;
    }
    struct spin_arg sa = {ch, dir, n};
    tps_spin(channel_spin_ready, &sa, spin_until,
             &ch->cpu[dir == RECEIVING ? SENDING : RECEIVING]);
    drain_grace grace = {-1, DRAIN_GRACE_NS, 0};
    for (;;) {
        assert(!node.linked && !inode.linked);
        if (tps_lock_acquire_until(&ch->lock, deadline) < 0) {
            rc = timed_out;
            break;
        }
        if (attempt(ch, dir, recs, n, got, &rc, r, &interp, &handoff)) {
            tps_lock_release(&ch->lock);
            if (handoff) {
                tps_handoff();
            }
            attempt_done(dir, recs, got, rc, r);
            break;
        }
        if (deadline >= 0 && tps_now_ns() >= deadline) {
            tps_lock_release(&ch->lock);
            rc = timed_out;
            break;
        }
        tps_waiter_reset(w);
        tps_wlist_push(list, &node);
        /* Checked on the list, under its lock: a stop at exit either is
         * seen here or wakes this node (tps_channels_wake_all takes the
         * lock after setting the flag). */
        if (tps_interp_is_stopping(st)) {
            tps_wlist_remove(list, &node);
            tps_lock_release(&ch->lock);
            rc = TPS_ERR_EXITING;
            break;
        }
        ch->parked[dir]++;
        tps_lock_release(&ch->lock);

        int watching = grace.until < 0 && !no_parked_drains;
        int64_t until = deadline;
        if (grace.until >= 0 && (until < 0 || grace.until < until)) {
            until = grace.until;
        }
        if (watching) {
            tps_interp_watch(st, &inode);
        }
        int why = watching && tps_interp_has_pending(st)
                  ? TPS_PARK_WOKEN : tps_waiter_park(w, until);
        if (watching) {
            tps_interp_unwatch(st, &inode);
        }

        /* Untimed: the node lives in this frame and must be off the
         * list before the frame goes. */
        tps_lock_acquire(&ch->lock);
        tps_wlist_remove(list, &node);
        tps_lock_release(&ch->lock);

        int drain = grace_after_park(&grace, st, watching, why);
        if (drain || why == TPS_PARK_SIGNAL) {
            PyEval_RestoreThread(ts);
            tps_interp_drain(st);
            if (why == TPS_PARK_SIGNAL && PyErr_CheckSignals() < 0) {
                return TPS_ERR_SIGNAL;
            }
            ts = PyEval_SaveThread();
        }
    }
    if (rc == 0) {
        tps_spin_learn(tps_now_ns() - now);
    }
    PyEval_RestoreThread(ts);
    return rc;
}

int
tps_channel_send(tps_channel *ch, TpShare_Record *const *recs, Py_ssize_t n,
                 int64_t timeout_ns)
{
    Py_ssize_t unused;
    /* Records in the ring are not counted: an owner's exit finds its
     * own there (chanexit.c). */
    return transfer(ch, SENDING, (TpShare_Record **)recs, n, &unused,
                    timeout_ns);
}

int
tps_channel_recv(tps_channel *ch, TpShare_Record **out, Py_ssize_t max,
                 Py_ssize_t *got, int64_t timeout_ns)
{
    *got = 0;
    return transfer(ch, RECEIVING, out, max, got, timeout_ns);
}

int
tps_channel_unrecv(tps_channel *ch, TpShare_Record *const *recs,
                   Py_ssize_t n)
{
    tps_untaking untaking = {{0}, {0}};

    assert(n > 0);
    tps_lock_acquire(&ch->lock);
    assert((uint64_t)n <= ch->received);   /* they were taken from here */
    if (tps_ring_reserve(&ch->ring, (size_t)n) < 0) {
        tps_lock_release(&ch->lock);
        return TPS_ERR_NOMEM;
    }
    tps_ring_unpop(&ch->ring, recs, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* An owner whose exit already settled its items settles them
         * again; told before this thread stops counting the record as
         * being read, so that the exit waits until it has.  Under the
         * lock: once it is released another receiver may take and free
         * the record. */
        if (tps_item_is_bound(recs[i])) {
            tps_interp_requeued(recs[i]->ownerst);
        }
        tps_reader_untake(&untaking, recs[i]);
    }
    ch->received -= (uint64_t)n;
    tps_wlist_wake(&ch->receivers, (int)(n < INT32_MAX ? n : INT32_MAX));
    tps_lock_release(&ch->lock);
    tps_reader_untaken(&untaking);
    return 0;
}

/* ---------------------------------------------------------------------
 * Every channel, for the exit of an interpreter (chanexit.c).
 */

tps_channel **
tps_channels_hold_all(size_t *n)
{
    pthread_mutex_lock(&channels.mutex);
    size_t k = 0;
    tps_channel **all = PyMem_RawMalloc((channels.byid.used + 1)
                                        * sizeof(tps_channel *));
    if (all != NULL) {
        PTRMAP_FOREACH(&channels.byid, s) {
            tps_channel *ch = s->value;
            ch->refcnt++;
            all[k++] = ch;
        }
    }
    pthread_mutex_unlock(&channels.mutex);
    *n = k;
    return all;
}

/* ---------------------------------------------------------------------
 * Process exit and fork().
 */

void
tps_channels_wake_all(void)
{
    /* The table's mutex, then each channel's lock: nothing takes them in
     * the other order. */
    pthread_mutex_lock(&channels.mutex);
    PTRMAP_FOREACH(&channels.byid, s) {
        tps_channel *ch = s->value;
        assert(ch->refcnt > 0);   /* the table's reference */
        tps_lock_acquire(&ch->lock);
        tps_wlist_wake_all(&ch->receivers);
        tps_wlist_wake_all(&ch->senders);
        tps_lock_release(&ch->lock);
    }
    pthread_mutex_unlock(&channels.mutex);
}

int
tps_channel_test_lock(int64_t id, int take)
{
    tps_channel *ch = tps_channel_lookup(id);
    if (ch == NULL) {
        return -1;
    }
    if (take) {
        tps_lock_acquire(&ch->lock);
    }
    else {
        assert(atomic_load(&ch->lock.taken));
        tps_lock_release(&ch->lock);
    }
    tps_channel_decref(ch);
    return 0;
}

void
tps_channels_atfork(tps_fork_phase phase)
{
    switch (phase) {
    case TPS_FORK_PREPARE:
        pthread_mutex_lock(&channels.mutex);
        break;
    case TPS_FORK_PARENT:
        pthread_mutex_unlock(&channels.mutex);
        break;
    case TPS_FORK_CHILD:
        /* The table is whole: its mutex was taken before the fork.  A
         * channel's lock, ring and wait lists may not be (a thread of
         * the parent may have been inside a section), and none of it can
         * serve the child: its items belong to the parent's interpreters
         * and its waiters were the parent's threads.  So every channel
         * of the table is FORKED, with no lock held, no waiter and no
         * item: the items and the ring are left as they are, never
         * released (releasing them could run hooks of interpreters that
         * no longer exist). */
        PTRMAP_FOREACH(&channels.byid, s) {
            tps_channel *ch = s->value;
            assert(ch->refcnt > 0 && ch->id == (int64_t)(uintptr_t)s->key);
            tps_lock_init(&ch->lock);
            atomic_store(&ch->closed, FORKED);
            tps_ring_forget(&ch->ring);
            tps_wlist_init(&ch->receivers);
            tps_wlist_init(&ch->senders);
            atomic_store(&ch->cpu[0], -1);
            atomic_store(&ch->cpu[1], -1);
        }
        pthread_mutex_unlock(&channels.mutex);
        break;
    }
}
