/* cacheline.h - memory laid out by cache line.
 *
 * Shared structures (a channel, an interpreter's release list, the
 * blocks of records) put what one thread writes and what another reads
 * on separate lines, so that a write does not evict a line another CPU
 * is reading.  This header holds the line size and the helpers that
 * allocate and prefetch whole lines.
 */
#ifndef TPSHARE_CACHELINE_H
#define TPSHARE_CACHELINE_H

#ifndef TPSHARE_BUILD_CORE
#error "cacheline.h is internal to tpshare"
#endif

#include "common.h"

#include <stdlib.h>
#include <string.h>

/* Zeroed memory aligned to a cache line (TPS_LINE bytes), for shared
 * structures whose fields are laid out by line so that what one thread
 * writes does not evict what another reads.  Free with free().  NULL on
 * failure (no exception set). */
#define TPS_LINE 64
static inline void *
tps_calloc_lines(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, TPS_LINE, size) != 0) {
        return NULL;
    }
    memset(p, 0, size);
    return p;
}

/* Start fetching the cache lines of `size` bytes at `p`, to read them or
 * to write them, for memory another thread wrote last. */
static inline void
tps_prefetch(const void *p, size_t size)
{
    for (size_t off = 0; off < size; off += TPS_LINE) {
        __builtin_prefetch((const char *)p + off, 0);
    }
}

static inline void
tps_prefetch_for_write(void *p, size_t size)
{
    for (size_t off = 0; off < size; off += TPS_LINE) {
        __builtin_prefetch((char *)p + off, 1);
    }
}

#endif /* TPSHARE_CACHELINE_H */
