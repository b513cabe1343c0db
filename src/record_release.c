/* record_release.c - holding and releasing records.
 *
 * A record is refcounted atomically, so any interpreter (or none) may
 * hold it.  When the last holder lets go (tps_record_release()), a
 * neutral record is freed where it is; an owner-bound one is freed at
 * once if the current interpreter is its owner, and otherwise pushed onto
 * the owner's release list (tps_interp_push_release(), owner.c), to be
 * freed under the owner's GIL by tps_record_free().  Holders in other
 * interpreters and records in the token table are counted in the owner,
 * records taken out of a channel by the thread reading them
 * (owner_reading.c); the owner's exit waits for them (owner_exit.c).
 */
#include "record.h"
#include "blocks.h"
#include "owner.h"
#include "registry.h"

void
tps_record_incref(TpShare_Record *rec)
{
    assert(atomic_load_explicit(&rec->refcnt, memory_order_relaxed) > 0);
    atomic_fetch_add_explicit(&rec->refcnt, 1, memory_order_relaxed);
}

/* Told when a record with a tracker is freed: installed by the layer
 * above (tracker.c), so that records know nothing of trackers. */
static _Atomic(tps_record_freed_fn) record_freed;

void
tps_record_set_freed_hook(tps_record_freed_fn fn)
{
    atomic_store_explicit(&record_freed, fn, memory_order_release);
}

void
tps_record_free(TpShare_Record *rec)
{
    tps_entry *entry = rec->entry;
    tps_interp *st = (rec->flags & TPS_REC_BOUND) ? rec->ownerst : NULL;

    if (rec->flags & (TPS_REC_SMALL | TPS_REC_TAIL)) {
        /* Memory of ours (tps_small_alloc), freed with the record: the
         * hook sees a copy of the data without it.  (A copy, so that this
         * thread does not write the record's lines: the sender that
         * reuses the record next finds them clean.) */
        if (entry->hooks.free != NULL) {
            TpShare_Data data = rec->data;
            data.ptr = NULL;
            entry->hooks.free(&data);
        }
    }
    else if (entry->hooks.free != NULL) {
        entry->hooks.free(&rec->data);
    }
    else {
        PyMem_RawFree(rec->data.ptr);
    }
    Py_XDECREF(rec->data.obj);
    if (!(rec->flags & TPS_REC_SHORT) && rec->tracker != NULL) {
        tps_record_freed_fn told = atomic_load_explicit(
            &record_freed, memory_order_acquire);
        /* Installed before the first tracker was made (tracker.c). */
        assert(told != NULL);
        told(rec->tracker);
    }
    if (st != NULL) {
        tps_interp_export_add(st, -1);
        tps_interp_decref(st);
    }
    tps_entry_decref(entry);
    tps_record_dealloc(rec);
}

/* Drop a reference to `rec`; the last one frees it, in its owner.  With
 * st_held the caller keeps the owner's state alive across the call. */
static void
release(TpShare_Record *rec, int st_held)
{
    if (rec == NULL) {
        return;
    }
    assert(atomic_load_explicit(&rec->refcnt, memory_order_relaxed) > 0);
    /* The sole holder drops the record without writing to it (a reader
     * of a count of 1 holds the only reference: nobody else can add
     * one), so that the sender reusing its block finds the line clean. */
    if (atomic_load_explicit(&rec->refcnt, memory_order_acquire) != 1
        && atomic_fetch_sub_explicit(&rec->refcnt, 1, memory_order_acq_rel)
           != 1)
    {
        return;
    }
    if (!(rec->flags & TPS_REC_BOUND)) {
        tps_record_free(rec);
        return;
    }
    PyThreadState *ts = tps_thread_state();
    if (ts != NULL
        && PyInterpreterState_GetID(PyThreadState_GetInterpreter(ts))
           == rec->owner)
    {
        tps_record_free(rec);
        return;
    }
    tps_interp *st = rec->ownerst;
    if (st_held) {
        tps_interp_push_release(st, rec);
        return;
    }
    tps_interp_incref(st);
    tps_interp_push_release(st, rec);
    tps_interp_decref(st);
}

void
tps_record_release(TpShare_Record *rec)
{
    release(rec, 0);
}

/* A reference to `rec` is about to go into the token table. */
void
tps_record_table_enter(TpShare_Record *rec)
{
    if (rec->flags & TPS_REC_BOUND) {
        tps_interp_queued_add(rec->ownerst, 1);
    }
}

void
tps_record_table_leave(TpShare_Record *rec)
{
    if (rec->flags & TPS_REC_BOUND) {
        tps_interp_queued_add(rec->ownerst, -1);
    }
}

/* Drop the reference of a record counted in its owner's `queued`. */
static void
release_queued(TpShare_Record *rec)
{
    /* Release first, so that when the owner's exit wait sees nothing
     * queued, the record is already on its release list. */
    tps_interp *st = rec->ownerst;
    assert(st != NULL);
    tps_interp_incref(st);
    release(rec, 1);
    tps_interp_queued_add(st, -1);
    tps_interp_decref(st);
}

void
tps_record_table_release(TpShare_Record *rec)
{
    if (!(rec->flags & TPS_REC_BOUND)) {
        tps_record_release(rec);
        return;
    }
    release_queued(rec);
}

void
tps_record_hold(TpShare_Record *rec, int64_t holder)
{
    tps_record_incref(rec);
    if ((rec->flags & TPS_REC_BOUND) && holder != rec->owner) {
        tps_interp_remote_add(rec->ownerst, 1);
    }
}

void
tps_record_unhold(TpShare_Record *rec, int64_t holder)
{
    if ((rec->flags & TPS_REC_BOUND) && holder != rec->owner) {
        /* Release first, so that when the owner's exit wait sees no
         * remote holder, the record is already on its release list. */
        tps_interp *st = rec->ownerst;
        tps_interp_incref(st);
        release(rec, 1);
        tps_interp_remote_add(st, -1);
        tps_interp_decref(st);
        return;
    }
    tps_record_release(rec);
}
