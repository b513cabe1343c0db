/* chancore.c - the channel core: FIFOs of share records between
 * interpreters (DESIGN.md layer 4).
 *
 * A channel is a ring of records with an optional capacity, one lock,
 * and two wait lists (receivers, senders).  It knows nothing about Python
 * types: MemChannel and the Object Channel (channel.c) put records in and
 * take them out; what a record holds is their business.
 *
 * Blocking (D7).  send/recv try once with the GIL held; if they must
 * wait they release the GIL, spin on the item count (no lock) for an
 * adaptive window (waiter.h), then park on a per-thread semaphore with a
 * monotonic deadline.  A parked thread is also on its interpreter's
 * release-waiter list, so releases pushed to it while it waits are
 * drained (D4): by another thread of the interpreter if one is running
 * and drains them within a grace period, else by the parked thread.  A
 * signal ends the park so Ctrl-C is handled promptly in the main thread.
 * Blocked senders resume only once the ring has drained below a
 * low-water mark (maxsize - maxsize/8): without that hysteresis both
 * sides fall into lock-step on a full ring.
 *
 * Closing (D8).  close() wakes every waiter.  Queued items can still be
 * received; then recv fails with TPS_ERR_CLOSED, and send fails at once.
 * When the last reference to a channel goes, every unreceived record is
 * released (in its owner).
 *
 * A sender's exit.  An owner-bound record in a ring is counted in its
 * owner's `queued` from before it goes in until the receiver that takes it
 * out is done reading it, so an owner never ends while another
 * interpreter reads its memory.  When an interpreter exits, its exit hook
 * (still alive, under its GIL) settles the owner-bound items it sent that
 * are still queued: each is replaced, in its place in the ring, by a
 * neutral copy when its value cannot change (bytes, pickled items,
 * tuples of them), else as the channel's unbounditems policy (or the one
 * given to its send) says: a marker record (UNBOUND, UNBOUND_ERROR) or
 * nothing (UNBOUND_REMOVE, counted as dropped).  Neutral items stay as
 * they are.
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
#include "tpshare_internal.h"
#include "ptrmap.h"
#include "waiter.h"

typedef enum { SENDING, RECEIVING } direction;

struct tps_channel {
    /* Read on every operation, written rarely: a line of their own. */
    int64_t id;
    long refcnt;                 /* guarded by channels.mutex */
    Py_ssize_t maxsize;          /* 0: unbounded */
    int64_t spin_ns;             /* < 0: adaptive (waiter.h) */
    unsigned int flags;          /* TPS_CHAN_*, fixed at creation */
    atomic_int closed;           /* OPEN, CLOSED or FORKED */
    /* Written by both sides on every operation. */
    _Alignas(TPS_LINE) tps_lock lock;  /* guards everything below */
    atomic_long count;           /* written under lock, read lock-free */
    /* The CPU each side last completed an operation on, read lock-free
     * by the other side's spinner (waiter.h). */
    atomic_int cpu[2];
    size_t head;
    TpShare_Record **ring;       /* raw memory, capacity cap (power of 2) */
    size_t cap;
    tps_wlist receivers;
    tps_wlist senders;
    uint64_t sent, received, dropped;
    uint64_t parked[2];          /* waits that parked, per direction */
};

static struct {
    pthread_mutex_t mutex;
    ptrmap byid;                 /* id -> channel (the table's reference) */
    int64_t next_id;
} channels = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .next_id = 16,               /* keys 0, 1 and 2 are reserved by ptrmap */
};

#define KEY(id) ((void *)(uintptr_t)(id))

/* Values of `closed`.  FORKED: this is a child process and the channel
 * was created before the fork (see tps_channels_atfork). */
enum { OPEN = 0, CLOSED = 1, FORKED = 2 };

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
        ch->ring = PyMem_RawCalloc(cap, sizeof(TpShare_Record *));
        if (ch->ring == NULL) {
            goto nomem;
        }
        ch->cap = cap;
    }
    pthread_mutex_lock(&channels.mutex);
    ch->id = channels.next_id++;
    int rc = ptrmap_set(&channels.byid, KEY(ch->id), ch);
    pthread_mutex_unlock(&channels.mutex);
    if (rc < 0) {
        goto nomem;
    }
    return ch;

nomem:
    PyMem_RawFree(ch->ring);
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
    long n = atomic_load(&ch->count);
    for (long i = 0; i < n; i++) {
        tps_record_queue_release(
            ch->ring[(ch->head + (size_t)i) & (ch->cap - 1)]);
    }
    atomic_store(&ch->count, 0);
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
    PyMem_RawFree(ch->ring);
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
    return (Py_ssize_t)atomic_load(&ch->count);
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
 * The ring (lock held).
 */

static int
ring_reserve(tps_channel *ch, size_t need)
{
    size_t count = (size_t)atomic_load(&ch->count);
    if (count + need <= ch->cap) {
        return 0;
    }
    size_t cap = ch->cap ? ch->cap : 16;
    while (cap < count + need) {
        cap *= 2;
    }
    TpShare_Record **ring = PyMem_RawMalloc(cap * sizeof(TpShare_Record *));
    if (ring == NULL) {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        ring[i] = ch->ring[(ch->head + i) & (ch->cap - 1)];
    }
    PyMem_RawFree(ch->ring);
    ch->ring = ring;
    ch->cap = cap;
    ch->head = 0;
    return 0;
}

static void
ring_push(tps_channel *ch, TpShare_Record *const *recs, Py_ssize_t n)
{
    size_t count = (size_t)atomic_load_explicit(&ch->count,
                                                memory_order_relaxed);
    for (Py_ssize_t i = 0; i < n; i++) {
        ch->ring[(ch->head + count + (size_t)i) & (ch->cap - 1)] = recs[i];
    }
    /* Release: a spinner that reads the count then takes the lock. */
    atomic_store_explicit(&ch->count, (long)(count + (size_t)n),
                          memory_order_release);
    ch->sent += (uint64_t)n;
}

static Py_ssize_t
ring_pop(tps_channel *ch, TpShare_Record **out, Py_ssize_t max)
{
    size_t count = (size_t)atomic_load_explicit(&ch->count,
                                                memory_order_relaxed);
    Py_ssize_t n = (Py_ssize_t)count;
    if (n > max) {
        n = max;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = ch->ring[ch->head];
        ch->head = (ch->head + 1) & (ch->cap - 1);
    }
    /* Only lock holders write the count. */
    atomic_store_explicit(&ch->count, (long)(count - (size_t)n),
                          memory_order_relaxed);
    ch->received += (uint64_t)n;
    return n;
}

static inline int
can_send(tps_channel *ch, Py_ssize_t n)
{
    long count = atomic_load_explicit(&ch->count, memory_order_relaxed);
    return ch->maxsize == 0 || count == 0 || count + n <= ch->maxsize;
}

/* After items left the ring: wake senders once below the low-water mark. */
static void
wake_senders(tps_channel *ch)
{
    if (ch->senders.count == 0) {
        return;
    }
    Py_ssize_t low = ch->maxsize - (ch->maxsize / 8 > 1 ? ch->maxsize / 8 : 1);
    if (atomic_load(&ch->count) <= low) {
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
        ? atomic_load_explicit(&ch->count, memory_order_relaxed) > 0
        : can_send(ch, n);
}

struct spin_arg {
    tps_channel *ch;
    direction dir;
    Py_ssize_t n;
};

static int
spin_ready(void *arg)
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

/* One attempt with the lock held.  Returns 1 when done (*rc set), 0 to
 * keep waiting. */
static int
attempt(tps_channel *ch, direction dir, TpShare_Record **recs, Py_ssize_t n,
        Py_ssize_t *got, int *rc)
{
    if (dir == RECEIVING) {
        if (atomic_load(&ch->count) > 0) {
            atomic_store_explicit(&ch->cpu[RECEIVING], sched_getcpu(),
                                  memory_order_relaxed);
            *got = ring_pop(ch, recs, n);
            wake_senders(ch);
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
        if (ring_reserve(ch, (size_t)n) < 0) {
            *rc = TPS_ERR_NOMEM;
            return 1;
        }
        atomic_store_explicit(&ch->cpu[SENDING], sched_getcpu(),
                              memory_order_relaxed);
        ring_push(ch, recs, n);
        tps_wlist_wake(&ch->receivers, (int)(n < INT32_MAX ? n : INT32_MAX));
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
 * a cap), so a busy interpreter's parked thread wakes rarely. */
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
    g->length = others && g->length < TPS_DRAIN_GRACE_MAX_NS
                ? 2 * g->length : TPS_DRAIN_GRACE_NS;
    g->until = -1;
    return !others && tps_interp_has_pending(st);
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

    assert(tps_thread_state() != NULL);   /* holds the GIL */
    assert(n > 0);
    /* Every lock wait is bounded by the caller's timeout: a lock that
     * cannot be had in time ends the operation like the timeout. */
    if (tps_lock_acquire_for(&ch->lock, timeout_ns) < 0) {
        return timed_out;
    }
    int done = attempt(ch, dir, recs, n, got, &rc);
    tps_lock_release(&ch->lock);
    if (done) {
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
    tps_wnode node = {.waiter = w}, inode = {.waiter = w};
    tps_wlist *list = dir == RECEIVING ? &ch->receivers : &ch->senders;

    PyThreadState *ts = PyEval_SaveThread();
    int64_t spin_until = now + tps_spin_window(ch->spin_ns);
    if (deadline >= 0 && spin_until > deadline) {
        spin_until = deadline;
    }
    struct spin_arg sa = {ch, dir, n};
    tps_spin(spin_ready, &sa, spin_until,
             &ch->cpu[dir == RECEIVING ? SENDING : RECEIVING]);
    drain_grace grace = {-1, TPS_DRAIN_GRACE_NS, 0};
    for (;;) {
        assert(!node.linked && !inode.linked);
        if (tps_lock_acquire_until(&ch->lock, deadline) < 0) {
            rc = timed_out;
            break;
        }
        if (attempt(ch, dir, recs, n, got, &rc)) {
            tps_lock_release(&ch->lock);
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
    /* Counted before a receiver can take them. */
    for (Py_ssize_t i = 0; i < n; i++) {
        tps_record_queue_enter(recs[i]);
    }
    int rc = transfer(ch, SENDING, (TpShare_Record **)recs, n, &unused,
                      timeout_ns);
    if (rc < 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            tps_record_queue_leave(recs[i]);
        }
    }
    return rc;
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
    assert(n > 0);
    tps_lock_acquire(&ch->lock);
    assert((uint64_t)n <= ch->received);   /* they were taken from here */
    if (ring_reserve(ch, (size_t)n) < 0) {
        tps_lock_release(&ch->lock);
        return TPS_ERR_NOMEM;
    }
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        ch->head = (ch->head - 1) & (ch->cap - 1);
        ch->ring[ch->head] = recs[i];
        /* Still counted in their owners' `queued` (the receiver's count
         * goes back with them); an owner whose exit already settled its
         * items settles them again.  Under the lock: once it is released
         * another receiver may take and free the record. */
        if (recs[i]->flags & TPS_REC_BOUND) {
            tps_interp_requeued(recs[i]->ownerst);
        }
    }
    atomic_fetch_add(&ch->count, (long)n);
    ch->received -= (uint64_t)n;
    tps_wlist_wake(&ch->receivers, (int)(n < INT32_MAX ? n : INT32_MAX));
    tps_lock_release(&ch->lock);
    return 0;
}

/* ---------------------------------------------------------------------
 * Interpreter exit: settle the owner-bound items sent by the exiting one.
 */

/* One of them, and what takes its place. */
typedef struct {
    TpShare_Record *rec;         /* a reference of ours */
    TpShare_Record *repl;        /* new reference; NULL: removed */
    int applied;                 /* repl took rec's place in the ring */
} settling;

static inline int
is_of(const TpShare_Record *rec, int64_t interp)
{
    return (rec->flags & TPS_REC_BOUND) && rec->owner == interp;
}

/* The settling of `rec` among the n in `items` (through `where` when it
 * could be built), or NULL. */
static settling *
settling_of(settling *items, size_t n, ptrmap *where, int indexed,
            TpShare_Record *rec)
{
    if (indexed) {
        int found;
        return ptrmap_get(where, rec, &found);
    }
    for (size_t i = 0; i < n; i++) {
        if (items[i].rec == rec) {
            return &items[i];
        }
    }
    return NULL;
}

/* What replaces `rec`, an item the exiting interpreter sent through `ch`:
 * a new reference, or NULL to remove it. */
static TpShare_Record *
replacement(tps_channel *ch, TpShare_Record *rec)
{
    TpShare_Record *repl = tps_record_neutral_copy(rec);
    if (repl != NULL) {
        return repl;
    }
    unsigned int policy = (rec->flags & TPS_REC_UNBOUND_MASK)
                          >> TPS_REC_UNBOUND_SHIFT;
    if (policy == 0) {
        policy = (ch->flags & TPS_CHAN_UNBOUND_MASK)
                 >> TPS_CHAN_UNBOUND_SHIFT;
    }
    assert(policy == TPS_UNBOUND_MARK || policy == TPS_UNBOUND_ERROR
           || policy == TPS_UNBOUND_REMOVE);
    if (policy == TPS_UNBOUND_REMOVE) {
        return NULL;
    }
    PyObject *exc = PyErr_GetRaisedException();
    repl = tps_unbound_marker(policy);
    if (repl == NULL) {
        /* Out of memory at exit: removed, and counted as dropped. */
        PyErr_Clear();
    }
    PyErr_SetRaisedException(exc);
    return repl;
}

/* Runs in the exiting interpreter, under its GIL.  The items stay in the
 * ring while their replacements are made (Python runs then, so not under
 * the lock): a receiver may still take one, and the owner then waits
 * until it has read it.  Those still queued afterwards are swapped in
 * place, so nothing is lost, duplicated or reordered. */
static void
settle_items_of(tps_channel *ch, int64_t interp)
{
    settling *items = NULL;
    size_t n = 0, mine = 0;
    ptrmap where = {0};
    int indexed = 1;

    assert(tps_thread_state() != NULL);
    assert(tps_current_interp_id() == interp);

    tps_lock_acquire(&ch->lock);
    size_t count = (size_t)atomic_load(&ch->count);
    for (size_t i = 0; i < count; i++) {
        mine += is_of(ch->ring[(ch->head + i) & (ch->cap - 1)], interp);
    }
    tps_lock_release(&ch->lock);
    if (mine == 0) {
        return;
    }
    items = PyMem_RawCalloc(mine, sizeof(settling));
    if (items == NULL) {
        return;  /* still counted: the exit hook tries again */
    }
    /* Only a receiver that could not rebuild an item puts one of ours
     * back in the meantime, and that makes the exit hook settle again:
     * what does not fit in `items` is left for then. */
    tps_lock_acquire(&ch->lock);
    count = (size_t)atomic_load(&ch->count);
    for (size_t i = 0; i < count && n < mine; i++) {
        TpShare_Record *rec = ch->ring[(ch->head + i) & (ch->cap - 1)];
        if (is_of(rec, interp)) {
            tps_record_incref(rec);
            items[n++].rec = rec;
        }
    }
    tps_lock_release(&ch->lock);

    for (size_t i = 0; i < n; i++) {
        items[i].repl = replacement(ch, items[i].rec);
        assert(items[i].repl == NULL
               || !(items[i].repl->flags & TPS_REC_BOUND));
        if (indexed && ptrmap_set(&where, items[i].rec, &items[i]) < 0) {
            indexed = 0;   /* no memory for the index: search instead */
        }
    }

    tps_lock_acquire(&ch->lock);
    count = (size_t)atomic_load(&ch->count);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        TpShare_Record *rec = ch->ring[(ch->head + i) & (ch->cap - 1)];
        settling *s = is_of(rec, interp)
                      ? settling_of(items, n, &where, indexed, rec) : NULL;
        if (s == NULL) {
            ch->ring[(ch->head + kept++) & (ch->cap - 1)] = rec;
            continue;
        }
        s->applied = 1;
        if (s->repl != NULL) {
            ch->ring[(ch->head + kept++) & (ch->cap - 1)] = s->repl;
        }
        else {
            ch->dropped++;
        }
    }
    atomic_store(&ch->count, (long)kept);
    if (kept < count) {
        wake_senders(ch);
    }
    tps_lock_release(&ch->lock);

    /* The originals are freed here, in their owner. */
    for (size_t i = 0; i < n; i++) {
        if (items[i].applied) {
            tps_record_queue_release(items[i].rec);   /* the ring's */
        }
        else if (items[i].repl != NULL) {
            tps_record_release(items[i].repl);   /* taken meanwhile */
        }
        tps_record_release(items[i].rec);        /* ours */
    }
    ptrmap_clear(&where);
    PyMem_RawFree(items);
}

void
tps_channels_forget_interp(int64_t interp)
{
    /* Hold every channel while working on it outside the table lock. */
    pthread_mutex_lock(&channels.mutex);
    size_t n = channels.byid.used, k = 0;
    tps_channel **all = PyMem_RawMalloc((n + 1) * sizeof(tps_channel *));
    if (all != NULL) {
        PTRMAP_FOREACH(&channels.byid, s) {
            tps_channel *ch = s->value;
            ch->refcnt++;
            all[k++] = ch;
        }
    }
    pthread_mutex_unlock(&channels.mutex);
    if (all == NULL) {
        return;  /* still counted: the exit hook tries again */
    }
    for (size_t i = 0; i < k; i++) {
        settle_items_of(all[i], interp);
        tps_channel_decref(all[i]);
    }
    PyMem_RawFree(all);
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
            atomic_store(&ch->count, 0);
            ch->ring = NULL;
            ch->cap = 0;
            ch->head = 0;
            tps_wlist_init(&ch->receivers);
            tps_wlist_init(&ch->senders);
            atomic_store(&ch->cpu[0], -1);
            atomic_store(&ch->cpu[1], -1);
        }
        pthread_mutex_unlock(&channels.mutex);
        break;
    }
}
