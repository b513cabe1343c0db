/* chanexit.c - the channel side of an interpreter's exit: its
 * owner-bound items still queued are settled.
 *
 * An owner-bound record in a ring is found there by its owner's exit; one
 * a receiver took out is counted by the receiving thread until it is done
 * reading it (owner_reading.c), so an owner never ends while another
 * interpreter reads its memory.  When an interpreter exits, its exit hook
 * (owner_exit.c; still alive, under its GIL) calls
 * tps_channels_forget_interp(), which settles the
 * owner-bound items it sent that are still queued in any channel: each is
 * replaced, in its place in the ring, by a neutral copy when its value
 * cannot change (bytes, pickled items, tuples of them), else as the
 * channel's unbounditems policy (or the one given to its send) says: a
 * marker record (UNBOUND, UNBOUND_ERROR) or nothing (UNBOUND_REMOVE,
 * counted as dropped).  Neutral items stay as they are.
 */
#include "chancore.h"
#include "chancore_layout.h"
#include "item.h"
#include "ptrmap.h"
#include "record.h"

/* Makes the marker records: installed by the layer above (unbound.c). */
static _Atomic(tps_unbound_maker) unbound_maker;

void
tps_channels_set_unbound_maker(tps_unbound_maker fn)
{
    atomic_store_explicit(&unbound_maker, fn, memory_order_release);
}

/* Out of memory: the exit hook tries again a second later. */
static void
unsettled(void)
{
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        PyErr_Clear();    /* no state either: nothing more to do */
        return;
    }
    tps_interp_unsettled(st);
}

/* One of them, and what takes its place. */
typedef struct {
    TpShare_Record *rec;         /* a reference of ours */
    TpShare_Record *repl;        /* new reference; NULL: removed */
    int applied;                 /* repl took rec's place in the ring */
} settling;

static inline int
is_of(const TpShare_Record *rec, int64_t interp)
{
    /* Immediate items are neutral: never an interpreter's. */
    return tps_item_is_bound(rec) && rec->owner == interp;
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
    tps_unbound_maker make = atomic_load_explicit(&unbound_maker,
                                                  memory_order_acquire);
    /* Installed when the module set up, before any channel existed. */
    assert(make != NULL);
    if (make == NULL) {
        return NULL;
    }
    PyObject *exc = PyErr_GetRaisedException();
    repl = make(policy);
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
    size_t count = tps_ring_count(&ch->ring);
    for (size_t i = 0; i < count; i++) {
        mine += is_of(*tps_ring_at(&ch->ring, i), interp);
    }
    tps_lock_release(&ch->lock);
    if (mine == 0) {
        return;
    }
    items = PyMem_RawCalloc(mine, sizeof(settling));
    if (items == NULL) {
        unsettled();
        return;
    }
    /* Only a receiver that could not rebuild an item puts one of ours
     * back in the meantime, and that makes the exit hook settle again:
     * what does not fit in `items` is left for then. */
    tps_lock_acquire(&ch->lock);
    count = tps_ring_count(&ch->ring);
    for (size_t i = 0; i < count && n < mine; i++) {
        TpShare_Record *rec = *tps_ring_at(&ch->ring, i);
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
    count = tps_ring_count(&ch->ring);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        TpShare_Record *rec = *tps_ring_at(&ch->ring, i);
        settling *s = is_of(rec, interp)
                      ? settling_of(items, n, &where, indexed, rec) : NULL;
        if (s == NULL) {
            *tps_ring_at(&ch->ring, kept++) = rec;
            continue;
        }
        s->applied = 1;
        if (s->repl != NULL) {
            *tps_ring_at(&ch->ring, kept++) = s->repl;
        }
        else {
            ch->dropped++;
        }
    }
    tps_ring_truncate(&ch->ring, kept);
    if (kept < count) {
        tps_channel_wake_senders(ch);
    }
    tps_lock_release(&ch->lock);

    /* The originals are freed here, in their owner. */
    for (size_t i = 0; i < n; i++) {
        if (items[i].applied) {
            tps_record_release(items[i].rec);   /* the ring's */
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
    size_t k;
    tps_channel **all = tps_channels_hold_all(&k);
    if (all == NULL) {
        unsettled();
        return;
    }
    for (size_t i = 0; i < k; i++) {
        settle_items_of(all[i], interp);
        tps_channel_decref(all[i]);
    }
    PyMem_RawFree(all);
}
