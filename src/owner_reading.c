/* owner_reading.c - owner-bound records a receiver has taken out of a
 * channel and is still reading, counted per receiving thread.
 *
 * An owner must not end while another interpreter reads its memory.  A
 * record in a channel's ring is found there by the owner's exit (it
 * settles the rings, chanexit.c); one that a receiver took out is not in
 * any ring until the receiver is done with it.  Those are counted here,
 * by the thread that took them out, in a table of its own: a few slots
 * of (owner ID, count) on cache lines that only this thread writes.  The
 * owner's exit sums the slots of every thread for its ID (an owner may
 * have more than one slot in a thread) and waits until
 * the sum is zero.  So a message costs no write to a line shared with the
 * sender or with the owner (a counter in the owner's state did, twice per
 * message, and made every owner-bound transfer a third slower).
 *
 * Taking out.  The receiver marks its table busy under the channel's lock
 * before it pops, and counts the records it took after it let the lock
 * go (reading a record then, not under the lock), then clears busy.  The
 * owner's exit settles every ring under its lock first: a record popped
 * before that is counted or its thread busy, and the exit waits (yields)
 * while a thread is busy before it sums.
 *
 * Overflow.  When a thread's slots all hold other owners, or it has no
 * table (no memory), the record is counted in its owner's `queued`, as
 * the token table counts.  While any record of the thread is counted that
 * way no new slot is given out, so a slot with the record's owner and a
 * nonzero count is exactly where the record was counted: the release
 * finds it again from the owner's ID alone.
 *
 * Waking the exit.  A thread whose slot drops to zero while an exit
 * waits (a process-wide count, read on that step only) looks the owner
 * up by ID and wakes it; it never touches the owner's state otherwise,
 * so the state may be gone by then.
 *
 * Tables are never freed: a thread's goes back to a free state at its
 * exit (a key's destructor) for the next new thread to take, and the
 * list of them is pushed to lock-free (no lock to lose in a fork).  In a
 * fork child the tables of the parent's other threads are cleared.
 */
#include "item.h"
#include "owner.h"
#include "owner_layout.h"
#include "record.h"

#include <sched.h>

#define READ_SLOTS TPS_READ_SLOTS

typedef struct {
    _Atomic int64_t owner;       /* written by the thread at count 0 */
    atomic_long count;           /* written by the thread only */
} read_slot;

struct tps_reader {
    read_slot slots[READ_SLOTS];
    atomic_int busy;             /* taking records out (see above) */
    atomic_int in_use;           /* a thread has it */
    int last;                    /* the slot used last: tried first */
    long overflow;               /* this thread's records in `queued` */
    struct tps_reader *next;     /* in the list, never unlinked */
};

static _Atomic(tps_reader *) all_readers;
/* Exits waiting on reading counts: a reader whose count drops to zero
 * wakes the owner only while this is nonzero. */
static atomic_int exits_waiting;

TPS_TLS tps_reader *tps_reader_tls;
#define my_reader tps_reader_tls
/* The thread is exiting, or its table could not be set up: it has none
 * from then on (a table that appeared between taking a record out and
 * releasing it would not know where the record was counted). */
static TPS_TLS int my_reader_gone;
static pthread_key_t reader_key;
static int reader_key_ok;
static pthread_once_t reader_once = PTHREAD_ONCE_INIT;

/* At thread exit: the table goes back for another thread (its counts
 * are zero: a thread reads what it took out before it ends). */
static void
reader_thread_exit(void *arg)
{
    tps_reader *r = arg;
    assert(r->overflow == 0 && !atomic_load(&r->busy));
    my_reader = NULL;
    my_reader_gone = 1;
    atomic_store_explicit(&r->in_use, 0, memory_order_release);
}

static void
reader_key_create(void)
{
    reader_key_ok = pthread_key_create(&reader_key, reader_thread_exit) == 0;
}

/* The thread's slot counting records of `owner`, or NULL. */
static inline read_slot *
slot_of(tps_reader *r, int64_t owner)
{
    read_slot *s = &r->slots[r->last];
    if (atomic_load_explicit(&s->count, memory_order_relaxed) > 0
        && atomic_load_explicit(&s->owner, memory_order_relaxed) == owner)
    {
        return s;
    }
    for (int i = 0; i < READ_SLOTS; i++) {
        s = &r->slots[i];
        if (atomic_load_explicit(&s->count, memory_order_relaxed) > 0
            && atomic_load_explicit(&s->owner, memory_order_relaxed)
               == owner)
        {
            r->last = i;
            return s;
        }
    }
    return NULL;
}

/* A free table of the list, or a new one; NULL on memory failure. */
static tps_reader *
reader_claim(void)
{
    for (tps_reader *r = atomic_load(&all_readers); r != NULL; r = r->next) {
        int free_one = 0;
        if (atomic_compare_exchange_strong(&r->in_use, &free_one, 1)) {
            return r;
        }
    }
    tps_reader *r = tps_calloc_lines(sizeof(tps_reader));
    if (r == NULL) {
        return NULL;
    }
    for (int i = 0; i < READ_SLOTS; i++) {
        atomic_init(&r->slots[i].owner, -1);
    }
    atomic_init(&r->in_use, 1);
    tps_reader *head = atomic_load(&all_readers);
    do {
        r->next = head;
    } while (!atomic_compare_exchange_weak(&all_readers, &head, r));
    return r;
}

tps_reader *
tps_reader_setup(void)
{
    if (my_reader != NULL || my_reader_gone) {
        return my_reader;
    }
    my_reader_gone = 1;
    pthread_once(&reader_once, reader_key_create);
    if (!reader_key_ok) {
        return NULL;
    }
    tps_reader *r = reader_claim();
    if (r == NULL) {
        return NULL;
    }
    if (pthread_setspecific(reader_key, r) != 0) {
        atomic_store(&r->in_use, 0);
        return NULL;
    }
    my_reader_gone = 0;
    my_reader = r;
    return r;
}

void
tps_reader_taking(tps_reader *r)
{
    if (r != NULL) {
        atomic_store_explicit(&r->busy, 1, memory_order_relaxed);
    }
}

/* Count a record of interpreter `id` (state `st`) being read by this
 * thread (`r`, or NULL).  The ID comes from the record: the line of the
 * state that holds it is written by the owner all the time. */
static inline void
count_one(tps_reader *r, int64_t id, tps_interp *st)
{
    if (r != NULL) {
        read_slot *s = &r->slots[r->last];
        if (r->overflow == 0
            && atomic_load_explicit(&s->count, memory_order_relaxed) == 0)
        {
            /* Free: taken at once (an owner may have two slots). */
            atomic_store_explicit(&s->owner, id, memory_order_relaxed);
            atomic_store_explicit(&s->count, 1, memory_order_relaxed);
            return;
        }
        s = slot_of(r, id);
        if (s != NULL) {
            long n = atomic_load_explicit(&s->count, memory_order_relaxed);
            atomic_store_explicit(&s->count, n + 1, memory_order_relaxed);
            return;
        }
        for (int i = 0; i < READ_SLOTS && r->overflow == 0; i++) {
            s = &r->slots[i];
            if (atomic_load_explicit(&s->count, memory_order_relaxed) == 0) {
                atomic_store_explicit(&s->owner, id, memory_order_relaxed);
                atomic_store_explicit(&s->count, 1, memory_order_relaxed);
                r->last = i;
                return;
            }
        }
        r->overflow++;
    }
    tps_interp_queued_add(st, 1);
}

void
tps_reader_took(tps_reader *r, TpShare_Record *const *recs, Py_ssize_t n)
{
    assert(r == NULL || r == my_reader);
    if (n == 1) {
        /* recv(): one item, without the loop's set-up. */
        if (tps_item_is_bound(recs[0])) {
            count_one(r, recs[0]->owner, recs[0]->ownerst);
        }
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (tps_item_is_bound(recs[i])) {
                count_one(r, recs[i]->owner, recs[i]->ownerst);
            }
        }
    }
    if (r != NULL) {
        /* Release: an exit that sees the flag clear sees the counts. */
        atomic_store_explicit(&r->busy, 0, memory_order_release);
    }
}

/* Wake the exit of interpreter `id` if it waits (any thread, no lock
 * held but maybe a channel's). */
static void
wake_exit_of(int64_t id)
{
    tps_interp *st = tps_interp_find(id);
    if (st != NULL) {
        tps_interp_wake_exit(st);
        tps_interp_decref(st);
    }
}

/* The record counted in `s` is done with; wakes the exit of `owner` when
 * it waits for this. */
static inline void
uncount(read_slot *s, int64_t owner)
{
    long n = atomic_load_explicit(&s->count, memory_order_relaxed);
    assert(n > 0);
    if (n > 1) {
        atomic_store_explicit(&s->count, n - 1, memory_order_relaxed);
        return;
    }
    /* The last record of that owner: its exit may wait for this.  The
     * exit counts itself in before it sums the slots; this clears the
     * slot before it reads that count (both sequentially consistent):
     * one of them sees the other. */
    atomic_store(&s->count, 0);
    if (atomic_load(&exits_waiting) > 0) {
        wake_exit_of(owner);
    }
}

/* Where this thread counted a record of `owner` it is reading: its slot,
 * or NULL when in the owner's `queued`. */
static inline read_slot *
counted_in(int64_t owner)
{
    tps_reader *r = my_reader;
    if (r == NULL) {
        return NULL;
    }
    read_slot *s = slot_of(r, owner);
    assert(s != NULL || r->overflow > 0);
    return s;
}

static inline void
overflow_done(void)
{
    assert(my_reader == NULL || my_reader->overflow > 0);
    if (my_reader != NULL) {
        my_reader->overflow--;
    }
}

void
tps_reader_untake(tps_untaking *u, TpShare_Record *rec)
{
    if (!tps_item_is_bound(rec)) {
        return;
    }
    read_slot *s = counted_in(rec->owner);
    if (s != NULL) {
        /* Uncounted once the lock is let go (tps_reader_untaken): its
         * wake-up looks the owner up under the table of interpreters,
         * which is not taken under a channel's lock. */
        int i = (int)(s - my_reader->slots);
        u->n[i]++;
        u->owner[i] = rec->owner;
        return;
    }
    /* The record (still in the ring, under its lock) holds its owner's
     * state. */
    tps_interp_queued_add(rec->ownerst, -1);
    overflow_done();
}

void
tps_reader_untaken(tps_untaking *u)
{
    if (my_reader == NULL) {
        return;
    }
    for (int i = 0; i < TPS_READ_SLOTS; i++) {
        for (long k = 0; k < u->n[i]; k++) {
            uncount(&my_reader->slots[i], u->owner[i]);
        }
    }
}

/* Declared in record.h: records are released here, where they are
 * counted. */
void
tps_record_queue_release(TpShare_Record *rec)
{
    if (!(rec->flags & TPS_REC_BOUND)) {
        tps_record_release(rec);
        return;
    }
    int64_t owner = rec->owner;
    read_slot *s = counted_in(owner);
    if (s == NULL) {
        tps_record_table_release(rec);    /* counted in `queued` */
        overflow_done();
        return;
    }
    /* Released first, so that when the owner's exit sees nothing being
     * read the record is on its release list; then nothing of the record
     * or of its owner's state is touched (either may be gone). */
    tps_record_release(rec);
    uncount(s, owner);
}

void
tps_reader_exit_waits(int delta)
{
    atomic_fetch_add(&exits_waiting, delta);
}

long
tps_reader_sum(int64_t owner)
{
    long sum = 0;
    for (tps_reader *r = atomic_load(&all_readers); r != NULL; r = r->next) {
        /* A busy thread is between its pop and its counting: a moment
         * without Python code in it. */
        while (atomic_load_explicit(&r->busy, memory_order_acquire)) {
            sched_yield();
        }
        for (int i = 0; i < READ_SLOTS; i++) {
            read_slot *s = &r->slots[i];
            long n = atomic_load(&s->count);
            if (n > 0 && atomic_load(&s->owner) == owner) {
                sum += n;
            }
        }
    }
    return sum;
}

void
tps_readers_atfork_child(void)
{
    for (tps_reader *r = atomic_load(&all_readers); r != NULL; r = r->next) {
        if (r == my_reader) {
            continue;     /* the forking thread's: it is not reading */
        }
        for (int i = 0; i < READ_SLOTS; i++) {
            atomic_store(&r->slots[i].count, 0);
        }
        r->overflow = 0;
        atomic_store(&r->busy, 0);
        atomic_store(&r->in_use, 0);
    }
    atomic_store(&exits_waiting, 0);
}
