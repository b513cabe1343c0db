/* record.h - share records: share, rebuild (record.c), hold and release
 * (record_release.c).
 */
#ifndef TPSHARE_RECORD_H
#define TPSHARE_RECORD_H

#ifndef TPSHARE_BUILD_CORE
#error "record.h is internal to tpshare"
#endif

#include "common.h"
#include "blocks.h"
#include "registry.h"
#include "owner.h"

typedef struct tps_tracker tps_tracker;
typedef struct tps_identity tps_identity;

#define TPS_REC_BOUND 0x1u   /* this record or a nested one is owner-bound */
#define TPS_REC_DUP   0x2u   /* referenced twice inside one message */
#define TPS_REC_IMMUTABLE 0x4u  /* the whole value can never change and
                                   its rebuild holds nothing of the owner's:
                                   a receiver may keep it (identity) */
#define TPS_REC_SMALL 0x8u   /* data.ptr is a block (tps_small_alloc) of
                                the kind in the bits below */
#define TPS_REC_TAIL 0x10u   /* data.ptr is the line after the record */
#define TPS_REC_LONG 0x20u   /* the record's block has that line */
#define TPS_REC_SHORT 0x1000u  /* the record is short: see
                                  TPS_REC_SHORT_SIZE */
/* Bits 6-7: what the sender asked for the item if its interpreter exits
 * before it is received and it cannot be copied (TPS_UNBOUND_*); 0: the
 * channel's choice. */
#define TPS_REC_UNBOUND_SHIFT 6
#define TPS_REC_UNBOUND_MASK (0x3u << TPS_REC_UNBOUND_SHIFT)
/* Bits 8-11: the block kind of data.ptr with TPS_REC_SMALL (blocks.h). */
#define TPS_REC_KIND_SHIFT 8
#define TPS_REC_KIND_MASK (0xfu << TPS_REC_KIND_SHIFT)

/* PEP 734's unbounditems: what a channel delivers for an owner-bound item
 * whose owner exited before it was received and that could not be turned
 * into a neutral copy (a view of the owner's memory). */
#define TPS_UNBOUND_MARK   1u  /* tpshare.UNBOUND in its place */
#define TPS_UNBOUND_ERROR  2u  /* its recv raises ItemInterpreterDestroyed */
#define TPS_UNBOUND_REMOVE 3u  /* removed, counted in stats()["dropped"] */

struct TpShare_Record {
    /* Holders: the creator, nested parents, Shared objects, views. */
    atomic_long refcnt;
    uint32_t flags;
    /* Owner interpreter ID; for a bound record also a held pointer to
     * its state (released when the record is freed). */
    int64_t owner;
    tps_interp *ownerst;
    /* Held reference to the registration used to share. */
    tps_entry *entry;
    /* Link in the owner's release list while queued there. */
    TpShare_Record *next_release;
    TpShare_Data data;
    /* A short record (TPS_REC_SHORT) ends here: the fields below exist
     * only in a record of two or three lines. */
    /* Held; told when the record is freed (MemChannel.send's tracker). */
    struct tps_tracker *tracker;
    /* Identity across messages (identity.c): nonzero serial of the
     * object the record was made from (at any depth of a message sent
     * through a channel with identity on), and the sender's id() of it. */
    uint64_t serial;
    uintptr_t origin;
};

/* A short record: no tracker, no identity.  Shared bytes and str (the
 * sender's object itself, sent through a channel with identity off) take
 * one, a small block of 96 bytes where a record takes two lines (128):
 * the one record kind that lives queued by the thousands with nothing in
 * its payload lines. */
#define TPS_REC_SHORT_SIZE offsetof(TpShare_Record, tracker)
#define TPS_BLOCK_SHORT (TPS_BLOCK_SMALL_FIRST + 3)

/* The serial of `rec` (0: none; a short record never has one). */
static inline uint64_t
tps_record_serial(const TpShare_Record *rec)
{
    return (rec->flags & TPS_REC_SHORT) ? 0 : rec->serial;
}

/* Payload memory for share hooks (TpShare_CAPI.DataAlloc is this
 * function): n bytes for `data` of a record being shared, in the cache
 * line after the record when n <= 64 and its block has that line, else a
 * block of TPS_SMALL_MAX bytes, or of the copy class that holds n up to
 * TPS_COPY_MAX bytes, from a per-thread cache (not malloc: a copy is
 * usually freed by another thread).  Sets data->ptr to it and returns
 * it; NULL, data unchanged, when n is larger (use PyMem_RawMalloc),
 * data->ptr is set already or memory is exhausted (no exception set).
 * The record frees the block itself; the hooks' free sees data->ptr
 * NULL. */
#define TPS_SMALL_MAX 128
#define TPS_COPY_MAX ((size_t)TPS_BLOCK_COPY_MAX)
void *tps_small_alloc(TpShare_Data *data, size_t n);
/* Share `obj` (borrowed) into a new record (one reference for the
 * caller).  NULL with an exception on failure; nothing kept. */
TpShare_Record *tps_share(PyObject *obj);
/* The same with the given registration instead of the registry's. */
TpShare_Record *tps_share_with(PyObject *obj, tps_entry *entry);
/* tps_share() when the caller knows the current interpreter's ID; with
 * `id` (the current interpreter's identity table, or NULL) every record
 * of the message made from an immutable object is tagged with its serial
 * (a channel with identity on). */
TpShare_Record *tps_share_in(PyObject *obj, int64_t owner,
                             struct tps_identity *id);
/* New reference or NULL with an exception.  `rec` borrowed. */
PyObject *tps_rebuild(TpShare_Record *rec);
/* tps_rebuild() that first looks every tagged record of the message up in
 * `id` (the current interpreter's identity table), and remembers what it
 * rebuilds for them.  New reference or NULL with an exception. */
PyObject *tps_rebuild_with_identity(TpShare_Record *rec,
                                    struct tps_identity *id);
void tps_record_incref(TpShare_Record *rec);
void tps_record_release(TpShare_Record *rec);
/* What tps_record_free() does with a record's tracker (rec->tracker,
 * whose reference the record holds): tell it and drop that reference.
 * Installed once by tracker.c before the first tracker is attached to a
 * record; any thread. */
typedef void (*tps_record_freed_fn)(tps_tracker *tracker);
void tps_record_set_freed_hook(tps_record_freed_fn fn);
/* Give back the memory of a record whose data was freed (inline: every
 * freed record comes here). */
static inline void
tps_record_dealloc(TpShare_Record *rec)
{
    /* Only a three-line block has the tail line. */
    assert(!(rec->flags & TPS_REC_TAIL) || (rec->flags & TPS_REC_LONG));
    if (rec->flags & TPS_REC_SMALL) {
        tps_block_free((int)((rec->flags & TPS_REC_KIND_MASK)
                             >> TPS_REC_KIND_SHIFT), rec->data.ptr);
    }
    tps_block_free((rec->flags & TPS_REC_LONG) ? TPS_BLOCK_THREE
                   : (rec->flags & TPS_REC_SHORT) ? TPS_BLOCK_SHORT
                   : TPS_BLOCK_TWO, rec);
}

/* Free a record whose refcount is zero, in the current interpreter (the
 * owner, or any for a neutral record). */
void tps_record_free(TpShare_Record *rec);
int tps_is_shareable(PyObject *obj);
/* Raise NotShareableError (formatted like PyErr_Format) in the current
 * interpreter, or TypeError where tpshare's module is gone
 * (not_shareable.c). */
void tps_set_not_shareable(const char *format, ...);
/* Whether obj rebuilds as the very same object anyway (None, True,
 * False, small ints). */
int tps_rebuilds_identical(PyObject *obj);
/* tps_share() of item `index` of the object the running hook shares:
 * an error names the index in the path (TpShare_CAPI.ShareItem is this
 * function). */
TpShare_Record *tps_share_item(PyObject *obj, Py_ssize_t index);
/* The identity memos' tables allocated in all threads and not yet
 * freed, for tests. */
long tps_memo_tables(void);

/* Hold `rec` on behalf of an object of the current interpreter; counted
 * as a remote holder when the current interpreter is not the owner. */
void tps_record_hold(TpShare_Record *rec, int64_t holder);
void tps_record_unhold(TpShare_Record *rec, int64_t holder);

/* A record goes into the token table, which takes over a reference:
 * counted in its owner's `queued` (owner-bound records only) until the
 * receiver that takes it out is done with it and calls
 * tps_record_table_release() (which drops that reference too).
 * tps_record_table_leave() undoes an enter whose record did not go in
 * (the caller keeps its reference).  Any thread, no GIL needed. */
void tps_record_table_enter(TpShare_Record *rec);
void tps_record_table_leave(TpShare_Record *rec);
void tps_record_table_release(TpShare_Record *rec);

/* Records in a channel's ring are not counted: the owner's exit finds
 * them there.  One a receiver took out is counted by the receiving
 * thread (tps_reader_took, owner.h) until that thread is done with it
 * and calls tps_record_queue_release() (which drops the ring's reference
 * too; defined in owner_reading.c, where the count is).  No GIL
 * needed. */
void tps_record_queue_release(TpShare_Record *rec);

/* A neutral record with the same value as `rec` (owner-bound, owned by
 * the current interpreter): a new reference, or NULL without an
 * exception when its value may change (a view of the owner's memory) or
 * the copy failed.  Copies bytes, pickled items and immutable values
 * (tuples of them...) out of the owner; used at the owner's exit for the
 * items it leaves queued.  Needs the owner's GIL. */
TpShare_Record *tps_record_neutral_copy(TpShare_Record *rec);
/* Whether hooks must copy rather than keep a reference to the sender's
 * object (bytes: see TPS_BYTES_SHARE_MIN): set while
 * tps_record_neutral_copy() shares. */
int tps_share_must_copy(void);


/* The record that embeds `data`, the data a hook was given (records
 * made by tpshare always embed their data). */
#define TPS_RECORD_OF(data) \
    ((TpShare_Record *)((char *)(data) - offsetof(TpShare_Record, data)))

#endif /* TPSHARE_RECORD_H */
