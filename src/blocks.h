/* blocks.h - cache-line blocks: the memory of records and small copies.
 *
 * Two kinds of line-aligned blocks, taken and given back through
 * per-thread magazines (blocks.c explains the scheme).  The common case
 * of taking or giving back a block is inline here: one magazine slot of
 * the calling thread; the rest (refills, the depots, memory) is in
 * blocks.c.  This layer knows nothing of records: record.c decides which
 * kind a record takes.
 */
#ifndef TPSHARE_BLOCKS_H
#define TPSHARE_BLOCKS_H

#ifndef TPSHARE_BUILD_CORE
#error "blocks.h is internal to tpshare"
#endif

#include "common.h"

#include <assert.h>

#include "cacheline.h"

/* Under AddressSanitizer a cached block is poisoned, so that a use of a
 * record after it was freed is caught although its memory is kept. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TPS_BLOCK_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define TPS_BLOCK_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define TPS_BLOCK_POISON(p, n) ((void)(p), (void)(n))
#define TPS_BLOCK_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* The kinds: two lines (a record; a small copy) and three (a record with
 * a payload line after it). */
#define TPS_BLOCK_TWO 0
#define TPS_BLOCK_THREE 1
#define TPS_BLOCK_KINDS 2
#define TPS_BLOCK_SIZE(kind) ((size_t)((kind) + 2) * TPS_LINE)

#define TPS_BLOCK_MAG 128    /* blocks per magazine */
#define TPS_BLOCK_AHEAD 4    /* blocks fetched ahead of their allocation */

typedef struct tps_magazine {
    struct tps_magazine *next;      /* in the depot */
    int n;
    void *blocks[TPS_BLOCK_MAG];
} tps_magazine;

/* A thread's two magazines per kind (Bonwick's scheme: a thread that
 * alternates between allocating and freeing around a magazine boundary
 * swaps them instead of visiting the depot). */
typedef struct {
    tps_magazine *loaded[TPS_BLOCK_KINDS];
    tps_magazine *prev[TPS_BLOCK_KINDS];
} tps_block_cache;

/* The calling thread's cache, or NULL before its first block (blocks.c). */
extern TPS_TLS tps_block_cache *tps_block_cache_tls;

/* The slow paths of the two functions below (blocks.c). */
void *tps_block_alloc_slow(int kind);
void tps_block_free_slow(int kind, void *b);

/* A block of the kind (contents undefined), or NULL without an exception
 * when memory is exhausted.  Any thread, no GIL needed. */
static inline void *
tps_block_alloc(int kind)
{
    tps_block_cache *tc = tps_block_cache_tls;
    if (tc == NULL || tc->loaded[kind]->n == 0) {
        return tps_block_alloc_slow(kind);
    }
    tps_magazine *m = tc->loaded[kind];
    assert(m->n > 0 && m->n <= TPS_BLOCK_MAG);
    void *b = m->blocks[--m->n];
    TPS_BLOCK_UNPOISON(b, TPS_BLOCK_SIZE(kind));
    if (m->n >= TPS_BLOCK_AHEAD) {
        /* The blocks were last read (or written) by another thread: start
         * fetching the lines of the one handed out AHEAD calls later. */
        tps_prefetch_for_write(m->blocks[m->n - TPS_BLOCK_AHEAD],
                               TPS_BLOCK_SIZE(kind));
    }
    return b;
}

/* Give back a block of the kind.  Any thread, no GIL needed. */
static inline void
tps_block_free(int kind, void *b)
{
    tps_block_cache *tc = tps_block_cache_tls;
    if (tc == NULL || tc->loaded[kind]->n == TPS_BLOCK_MAG) {
        tps_block_free_slow(kind, b);
        return;
    }
    tps_magazine *m = tc->loaded[kind];
    assert(m->n >= 0 && m->n < TPS_BLOCK_MAG);
    TPS_BLOCK_POISON(b, TPS_BLOCK_SIZE(kind));
    m->blocks[m->n++] = b;
}

/* Two- and three-line blocks taken from memory and not yet given back,
 * for tests. */
void tps_block_counts(long long *two, long long *three);
/* Of those, the blocks cached in the depots and the calling thread's
 * magazines (the rest are in use or cached by other threads). */
void tps_block_cached(long long *two, long long *three);

#endif /* TPSHARE_BLOCKS_H */
