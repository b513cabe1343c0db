/* ring.h - the ring of a channel: a FIFO of records that grows.
 *
 * A power-of-two array of record pointers with a head and a count.  The
 * ring holds the references of the records in it but never looks inside
 * them; a slot may also hold an immediate item (item.h), a tagged word
 * the ring moves as it moves a record pointer.  Every operation runs under the lock of the channel that owns
 * the ring (chancore.c), except reading the count, which a spinner does
 * lock-free.  The operations of every send and receive are inline here;
 * growing the ring and the rarer edits are in ring.c.
 */
#ifndef TPSHARE_RING_H
#define TPSHARE_RING_H

#ifndef TPSHARE_BUILD_CORE
#error "ring.h is internal to tpshare"
#endif

#include "common.h"

typedef struct {
    atomic_long count;           /* written under lock, read lock-free */
    size_t head;
    TpShare_Record **slots;      /* raw memory, capacity cap (power of 2) */
    size_t cap;
} tps_ring;

/* How many records the ring holds; lock-free. */
static inline size_t
tps_ring_count(tps_ring *r)
{
    return (size_t)atomic_load_explicit(&r->count, memory_order_relaxed);
}

/* The i-th record from the head (i < count). */
static inline TpShare_Record **
tps_ring_at(tps_ring *r, size_t i)
{
    return &r->slots[(r->head + i) & (r->cap - 1)];
}

/* Make room for `need` more records: 0, or -1 on memory failure (the
 * ring is unchanged). */
int tps_ring_reserve(tps_ring *r, size_t need);

/* Append n records (room reserved). */
static inline void
tps_ring_push(tps_ring *r, TpShare_Record *const *recs, Py_ssize_t n)
{
    size_t count = tps_ring_count(r);
    for (Py_ssize_t i = 0; i < n; i++) {
        *tps_ring_at(r, count + (size_t)i) = recs[i];
    }
    /* Release: a spinner that reads the count then takes the lock. */
    atomic_store_explicit(&r->count, (long)(count + (size_t)n),
                          memory_order_release);
}

/* Take up to max records from the head into out; how many. */
static inline Py_ssize_t
tps_ring_pop(tps_ring *r, TpShare_Record **out, Py_ssize_t max)
{
    size_t count = tps_ring_count(r);
    Py_ssize_t n = (Py_ssize_t)count;
    if (n > max) {
        n = max;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = r->slots[r->head];
        r->head = (r->head + 1) & (r->cap - 1);
    }
    /* Only lock holders write the count. */
    atomic_store_explicit(&r->count, (long)(count - (size_t)n),
                          memory_order_relaxed);
    return n;
}

/* Put n records back at the head, in order (room reserved). */
void tps_ring_unpop(tps_ring *r, TpShare_Record *const *recs, Py_ssize_t n);

/* Keep the first `kept` records and forget the rest (a caller that
 * compacted the ring in place through tps_ring_at()). */
void tps_ring_truncate(tps_ring *r, size_t kept);

/* Free the memory of the ring (the caller released its records). */
void tps_ring_free(tps_ring *r);

/* Forget every record and the memory of the ring, freeing and releasing
 * nothing: for a fork child, where they belong to the parent. */
void tps_ring_forget(tps_ring *r);

#endif /* TPSHARE_RING_H */
