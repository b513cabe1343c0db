/* ring.c - the ring of a channel: growing it and its rarer edits.
 *
 * ring.h has the ring and the operations of every send and receive; here
 * is what runs when the ring must grow, when a receiver gives records
 * back, and when an exiting sender's items are settled.  All under the
 * lock of the channel that owns the ring (chancore.c).
 */
#include "ring.h"

int
tps_ring_reserve(tps_ring *r, size_t need)
{
    size_t count = tps_ring_count(r);
    if (count + need <= r->cap) {
        return 0;
    }
    size_t cap = r->cap ? r->cap : 16;
    while (cap < count + need) {
        cap *= 2;
    }
    TpShare_Record **slots = PyMem_RawMalloc(cap * sizeof(TpShare_Record *));
    if (slots == NULL) {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        slots[i] = *tps_ring_at(r, i);
    }
    PyMem_RawFree(r->slots);
    r->slots = slots;
    r->cap = cap;
    r->head = 0;
    return 0;
}

void
tps_ring_unpop(tps_ring *r, TpShare_Record *const *recs, Py_ssize_t n)
{
    assert(tps_ring_count(r) + (size_t)n <= r->cap);
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        r->head = (r->head - 1) & (r->cap - 1);
        r->slots[r->head] = recs[i];
    }
    atomic_fetch_add(&r->count, (long)n);
}

void
tps_ring_truncate(tps_ring *r, size_t kept)
{
    assert(kept <= tps_ring_count(r));
    atomic_store(&r->count, (long)kept);
}

void
tps_ring_free(tps_ring *r)
{
    PyMem_RawFree(r->slots);
    r->slots = NULL;
    r->cap = 0;
    r->head = 0;
    atomic_store(&r->count, 0);
}

void
tps_ring_forget(tps_ring *r)
{
    atomic_store(&r->count, 0);
    r->slots = NULL;
    r->cap = 0;
    r->head = 0;
}
