/* blocks.h - cache-line blocks: the memory of records and of copies.
 *
 * Kinds of line-aligned blocks, taken and given back through
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

/* The kinds: two lines (a record; a small copy), three (a record with a
 * payload line after it), the copy classes: copies of 129 bytes to
 * 16 KiB, in classes of 4 or 6 lines times a power of two (256, 384,
 * 512, 768 bytes... 12 KiB, 16 KiB), so that a copy wastes at most a
 * third of its block; and the small classes of 32, 48, 80, 96 and 128
 * bytes, 16-aligned and not whole lines: the compact blocks of a
 * channel's immediate items (item.h) and the short records of shared
 * bytes and str (record.h), which live queued, where memory per item
 * counts more than a line shared by two blocks. */
#define TPS_BLOCK_TWO 0
#define TPS_BLOCK_THREE 1
#define TPS_BLOCK_COPY_FIRST 2
#define TPS_BLOCK_SMALL_FIRST 15
#define TPS_BLOCK_KINDS 20
#define TPS_BLOCK_COPY_MAX ((size_t)16 * 1024)
#define TPS_BLOCK_SMALL_SIZE(kind) \
    ((kind) == TPS_BLOCK_SMALL_FIRST ? (size_t)32 \
     : (kind) == TPS_BLOCK_SMALL_FIRST + 1 ? (size_t)48 \
     : (kind) == TPS_BLOCK_SMALL_FIRST + 2 ? (size_t)80 \
     : (kind) == TPS_BLOCK_SMALL_FIRST + 3 ? (size_t)96 : (size_t)128)
#define TPS_BLOCK_SIZE(kind) \
    ((kind) >= TPS_BLOCK_SMALL_FIRST ? TPS_BLOCK_SMALL_SIZE(kind) \
     : (kind) < TPS_BLOCK_COPY_FIRST ? ((size_t)(kind) + 2) * TPS_LINE \
     : ((size_t)((kind) % 2 ? 6 : 4) * TPS_LINE) \
       << (((kind) - TPS_BLOCK_COPY_FIRST) / 2))
#define TPS_BLOCK_SMALL_MAX ((size_t)128)

#define TPS_BLOCK_MAG 128    /* blocks per magazine, at most */
#define TPS_BLOCK_AHEAD 4    /* blocks fetched ahead of their allocation */

typedef struct tps_magazine {
    struct tps_magazine *next;      /* in the depot */
    int n;
    int cap;                        /* blocks it holds when full: fewer
                                       of the larger kinds (blocks.c) */
    void *blocks[TPS_BLOCK_MAG];
} tps_magazine;

/* The copy class that holds n bytes (TPS_SMALL_MAX < n <=
 * TPS_BLOCK_COPY_MAX). */
static inline int
tps_block_copy_kind(size_t n)
{
    assert(n > 2 * TPS_LINE && n <= TPS_BLOCK_COPY_MAX);
    /* n is in (2^b, 2^(b+1)]: the six-line class of that octave (3 *
     * 2^(b-1) bytes) when it fits, else the four-line one (2^(b+1)). */
    int b = 63 - __builtin_clzll((unsigned long long)n - 1);
    int kind = b < 8 ? TPS_BLOCK_COPY_FIRST
               : n <= ((size_t)3 << (b - 1)) ? 2 * b - 13 : 2 * b - 12;
    assert(kind < TPS_BLOCK_SMALL_FIRST && TPS_BLOCK_SIZE(kind) >= n
           && (kind == TPS_BLOCK_COPY_FIRST
               || TPS_BLOCK_SIZE(kind - 1) < n));
    return kind;
}

/* The small class that holds n bytes (n <= TPS_BLOCK_SMALL_MAX). */
static inline int
tps_block_small_kind(size_t n)
{
    assert(n <= TPS_BLOCK_SMALL_MAX);
    return TPS_BLOCK_SMALL_FIRST + (n > 32) + (n > 48) + (n > 80) + (n > 96);
}

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
    assert(m->n > 0 && m->n <= m->cap);
    void *b = m->blocks[--m->n];
    TPS_BLOCK_UNPOISON(b, TPS_BLOCK_SIZE(kind));
    if (m->n >= TPS_BLOCK_AHEAD) {
        /* The blocks were last read (or written) by another thread: start
         * fetching the lines of the one handed out AHEAD calls later (its
         * first lines only for a copy: the copy streams the rest). */
        tps_prefetch_for_write(m->blocks[m->n - TPS_BLOCK_AHEAD],
                               kind < TPS_BLOCK_COPY_FIRST
                               || kind >= TPS_BLOCK_SMALL_FIRST
                               ? TPS_BLOCK_SIZE(kind) : 2 * TPS_LINE);
    }
    return b;
}

/* Give back a block of the kind.  Any thread, no GIL needed. */
static inline void
tps_block_free(int kind, void *b)
{
    tps_block_cache *tc = tps_block_cache_tls;
    if (tc == NULL || tc->loaded[kind]->n == tc->loaded[kind]->cap) {
        tps_block_free_slow(kind, b);
        return;
    }
    tps_magazine *m = tc->loaded[kind];
    assert(m->n >= 0 && m->n < m->cap);
    TPS_BLOCK_POISON(b, TPS_BLOCK_SIZE(kind));
    m->blocks[m->n++] = b;
}

/* Two- and three-line blocks taken from memory and not yet given back,
 * for tests. */
void tps_block_counts(long long *two, long long *three);
/* Of those, the blocks cached in the depots and the calling thread's
 * magazines (the rest are in use or cached by other threads). */
void tps_block_cached(long long *two, long long *three);
/* The same for the copy classes together, for tests. */
void tps_block_copy_counts(long long *live, long long *cached);
/* The same for the small classes together, for tests. */
void tps_block_small_counts(long long *live, long long *cached);

#endif /* TPSHARE_BLOCKS_H */
