/* item.h - what a slot of a channel's ring holds: a record, or an
 * immediate item.
 *
 * A Channel (or Queue) with identity off stores the commonest small
 * values without a record: an exact int of 63 bits, None, True and False
 * in the slot's word itself, and an exact float or a short exact bytes or
 * str in a compact block (an 8-byte header and the payload, from a small
 * block class of blocks.h) that the slot points to.  Such an item belongs to no
 * interpreter: it is neutral, never owner-bound, never settled at an
 * owner's exit and never counted as being read.  A record is at least
 * 8-aligned, so the three low bits of the word tell them apart:
 *   ...xx1  an int: the value is the word shifted right by one;
 *   ...010  a compact block (16-aligned) at the word minus 2;
 *   ...100  a constant: the word shifted right by three (TPS_IMM_NONE...);
 *   ...000  a record.
 * The word keeps the type TpShare_Record * so that the channel core moves
 * items as it moves records; only the functions here look at the tag.
 * Made and rebuilt by immediate.c (the object layer); released here, with
 * no GIL needed.
 */
#ifndef TPSHARE_ITEM_H
#define TPSHARE_ITEM_H

#ifndef TPSHARE_BUILD_CORE
#error "item.h is internal to tpshare"
#endif

#include "common.h"
#include "blocks.h"
#include "record.h"

#define TPS_IMM_TAG_MASK ((uintptr_t)0x7)
#define TPS_IMM_TAG_INT ((uintptr_t)0x1)     /* low bit only */
#define TPS_IMM_TAG_COMPACT ((uintptr_t)0x2)
#define TPS_IMM_TAG_CONST ((uintptr_t)0x4)

/* The constants, shifted left by three in the word. */
#define TPS_IMM_NONE 0
#define TPS_IMM_FALSE 1
#define TPS_IMM_TRUE 2

/* What a compact block holds (its `what`). */
#define TPS_COMPACT_BYTES 0
#define TPS_COMPACT_ASCII 1     /* str of kind 1, every character < 128 */
#define TPS_COMPACT_LATIN1 2    /* str of kind 1 with one >= 128 */
#define TPS_COMPACT_UCS2 3
#define TPS_COMPACT_UCS4 4
#define TPS_COMPACT_FLOAT 5     /* a double (len 1) */

/* The payload a compact block takes at most: with its header, the
 * largest small block class (128 bytes). */
#define TPS_COMPACT_MAX 120

typedef struct {
    uint32_t len;                /* bytes: bytes; str: characters;
                                    float: 1 */
    uint8_t what;                /* TPS_COMPACT_* */
    uint8_t block_kind;          /* its block's kind (blocks.h) */
    uint16_t unused;
    char data[];                 /* len bytes, len characters, a double */
} tps_compact;

_Static_assert(sizeof(tps_compact) == 8, "a compact header is one word");

/* Whether the slot word `it` is an immediate item (not a record). */
static inline int
tps_item_is_imm(const TpShare_Record *it)
{
    return ((uintptr_t)it & TPS_IMM_TAG_MASK) != 0;
}

/* The compact block of an immediate item, or NULL when it has none. */
static inline tps_compact *
tps_item_compact(const TpShare_Record *it)
{
    uintptr_t w = (uintptr_t)it;
    return (w & TPS_IMM_TAG_MASK) == TPS_IMM_TAG_COMPACT
           ? (tps_compact *)(w - TPS_IMM_TAG_COMPACT) : NULL;
}

/* Free the compact block of an immediate item, if it has one. */
static inline void
tps_imm_free(TpShare_Record *it)
{
    tps_compact *c = tps_item_compact(it);
    if (c != NULL) {
        tps_block_free(c->block_kind, c);
    }
}

/* Release a record of a ring, or free an immediate item's block.  Any
 * thread, no GIL needed (as tps_record_release for a neutral record). */
static inline void
tps_item_release(TpShare_Record *it)
{
    if (!tps_item_is_imm(it)) {
        tps_record_release(it);
        return;
    }
    tps_imm_free(it);
}

/* tps_record_queue_release() for an item a receiver took out of a ring
 * (an immediate one was never counted as being read). */
static inline void
tps_item_queue_release(TpShare_Record *it)
{
    if (!tps_item_is_imm(it)) {
        tps_record_queue_release(it);
        return;
    }
    tps_imm_free(it);
}

/* Whether `it` is an owner-bound record (an immediate item never is). */
static inline int
tps_item_is_bound(const TpShare_Record *it)
{
    return !tps_item_is_imm(it) && (it->flags & TPS_REC_BOUND);
}

/* immediate.c: the item for `obj` (borrowed) when it can be immediate,
 * else NULL (no exception: the caller makes a record; also when memory
 * for a compact block is exhausted).  Needs the GIL. */
TpShare_Record *tps_imm_make(PyObject *obj);
/* immediate.c: the object an immediate item stands for, in the current
 * interpreter; `it` is left as it is (the caller releases it).  New
 * reference, or NULL with an exception. */
PyObject *tps_imm_rebuild(const TpShare_Record *it);

#endif /* TPSHARE_ITEM_H */
