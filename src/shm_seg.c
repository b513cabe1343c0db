/* shm_seg.c - the shared segment of tpshare.shm: layout, robust lock,
 * block allocator and ring (repair and reclaim: shm_repair.c).
 *
 * No Python objects here: functions return TPS_SHM_OK or a negative
 * TPS_SHM_E* code, and the ones marked "under the lock" need
 * tps_shm_lock().  The segment is untrusted (see shm.h): each index,
 * offset and length read from it is checked, then used from a local.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS (1u << 20)
#define SWEEP_NS 50000000
#define MAX_BLOCKS (1u << 22)

static uint64_t
align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

uint64_t
tps_shm_granules(uint64_t len)
{
    /* An empty block still takes a granule, so offsets stay unique. */
    return len == 0 ? 1 : (len + TPS_SHM_GRANULE - 1) / TPS_SHM_GRANULE;
}

/* Where each part starts for these counts: the creator writes it, an
 * opener recomputes it from the counts and demands the same numbers. */
typedef struct {
    uint64_t slots_off, blocks_off, bitmap_off, heap_off, total;
} seg_layout;

static int
compute_layout(uint32_t nslots, uint32_t nblocks, uint64_t ngranules,
               seg_layout *out)
{
    if (nslots == 0 || nslots > MAX_SLOTS || nblocks == 0
            || nblocks > MAX_BLOCKS || ngranules == 0
            || ngranules > ((uint64_t)1 << 40) / TPS_SHM_GRANULE) {
        return TPS_SHM_ECORRUPT;
    }
    out->slots_off = align_up(sizeof(tps_shm_header), 64);
    out->blocks_off = align_up(out->slots_off
                               + (uint64_t)nslots * sizeof(tps_shm_slot), 64);
    out->bitmap_off = align_up(out->blocks_off
                               + (uint64_t)nblocks * sizeof(tps_shm_block),
                               64);
    out->heap_off = align_up(out->bitmap_off + (ngranules + 63) / 64 * 8,
                             4096);
    out->total = out->heap_off + ngranules * TPS_SHM_GRANULE;
    return TPS_SHM_OK;
}

static void
counts_for(uint64_t size, uint32_t maxsize, uint32_t *nslots,
           uint32_t *nblocks, uint64_t *ngranules)
{
    uint64_t n = size / 1024;
    if (maxsize) {
        n = maxsize;
    }
    else if (n < 256) {
        n = 256;
    }
    else if (n > 65536) {
        n = 65536;
    }
    *nslots = (uint32_t)n;
    /* Views held after recv and buffers not sent yet need blocks too. */
    *nblocks = (uint32_t)(n * 2 < 1024 ? 1024 : n * 2);
    if (*nblocks > MAX_BLOCKS) {
        *nblocks = MAX_BLOCKS;
    }
    *ngranules = tps_shm_granules(size);
}

int
tps_shm_layout_size(uint64_t size, uint32_t maxsize, uint64_t *total)
{
    uint32_t nslots, nblocks;
    uint64_t ngranules;
    seg_layout l;
    if (maxsize > MAX_SLOTS) {
        return TPS_SHM_EFULL;
    }
    counts_for(size, maxsize, &nslots, &nblocks, &ngranules);
    if (compute_layout(nslots, nblocks, ngranules, &l) < 0) {
        return TPS_SHM_ENOSPACE;
    }
    *total = l.total;
    return TPS_SHM_OK;
}

static void
fill_map(tps_shm_map *m, char *base, size_t size, const seg_layout *l,
         uint32_t nslots, uint32_t nblocks, uint64_t ngranules,
         uint32_t maxsize, uint32_t kind)
{
    m->base = base;
    m->size = size;
    m->hdr = (tps_shm_header *)base;
    m->slots = (tps_shm_slot *)(base + l->slots_off);
    m->blocks = (tps_shm_block *)(base + l->blocks_off);
    m->bitmap = (uint64_t *)(base + l->bitmap_off);
    m->heap = base + l->heap_off;
    m->heap_size = ngranules * TPS_SHM_GRANULE;
    m->ngranules = ngranules;
    m->nslots = nslots;
    m->nblocks = nblocks;
    m->maxsize = maxsize;
    m->kind = kind;
}

/* Lay out a fresh (zeroed) segment of `size` bytes, which
 * tps_shm_layout_size(payload, maxsize) gave. */
int
tps_shm_init(tps_shm_map *m, char *base, size_t size, uint64_t payload,
             uint32_t maxsize, uint32_t kind, const uint8_t *token)
{
    uint32_t nslots, nblocks;
    uint64_t ngranules;
    seg_layout l;
    pthread_mutexattr_t attr;
    tps_shm_header *h = (tps_shm_header *)base;
    int rc = TPS_SHM_ESYS;

    /* The tables of tps_shm_layout_size(), so that the heap, what is
     * left after them, holds at least the payload asked for (tables
     * sized for the whole segment would take some of it). */
    counts_for(payload, maxsize, &nslots, &nblocks, &ngranules);
    if (compute_layout(nslots, nblocks, ngranules, &l) < 0
            || l.heap_off >= size) {
        return TPS_SHM_ENOSPACE;
    }
    ngranules = (size - l.heap_off) / TPS_SHM_GRANULE;
    if (compute_layout(nslots, nblocks, ngranules, &l) < 0
            || l.total > size) {
        return TPS_SHM_ENOSPACE;
    }
    h->magic = TPS_SHM_MAGIC;
    h->version = TPS_SHM_VERSION;
    h->header_size = (uint32_t)sizeof(tps_shm_header);
    memcpy(h->token, token, TPS_SHM_TOKEN);
    h->total_size = size;
    h->slots_off = l.slots_off;
    h->blocks_off = l.blocks_off;
    h->bitmap_off = l.bitmap_off;
    h->heap_off = l.heap_off;
    h->ngranules = ngranules;
    h->nslots = nslots;
    h->nblocks = nblocks;
    h->maxsize = maxsize;
    h->kind = kind;
    for (int k = 0; k < TPS_SHM_NCACHE; k++) {
        h->cache[k] = UINT32_MAX;
    }
    /* Robust: a holder that dies makes the next locker repair.  Process-
     * shared: it lives in the segment, used by every process. */
    if (pthread_mutexattr_init(&attr) != 0) {
        return TPS_SHM_ESYS;
    }
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0
            || pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0
            || pthread_mutex_init(&h->lock, &attr) != 0) {
        goto finally;
    }
    fill_map(m, base, size, &l, nslots, nblocks, ngranules, maxsize, kind);
    rc = TPS_SHM_OK;
finally:
    pthread_mutexattr_destroy(&attr);
    return rc;
}

/* Check a segment another process made and describe it in *m. */
int
tps_shm_attach(tps_shm_map *m, char *base, size_t size, const uint8_t *token)
{
    tps_shm_header h;
    seg_layout l;
    if (size < sizeof(tps_shm_header)) {
        return TPS_SHM_ECORRUPT;
    }
    /* One copy, so that the checks and the use see the same numbers. */
    memcpy(&h, base, sizeof(h));
    if (h.magic != TPS_SHM_MAGIC || h.version != TPS_SHM_VERSION
            || h.header_size != sizeof(tps_shm_header)
            || (token && memcmp(h.token, token, TPS_SHM_TOKEN) != 0)
            || h.total_size != size
            || compute_layout(h.nslots, h.nblocks, h.ngranules, &l) < 0
            || l.slots_off != h.slots_off || l.blocks_off != h.blocks_off
            || l.bitmap_off != h.bitmap_off || l.heap_off != h.heap_off
            || l.total > size
            || (h.maxsize != 0 && h.maxsize != h.nslots)) {
        return TPS_SHM_ECORRUPT;
    }
    fill_map(m, base, size, &l, h.nslots, h.nblocks, h.ngranules, h.maxsize,
             h.kind);
    return TPS_SHM_OK;
}

int64_t
tps_shm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
finish_lock(tps_shm_map *m, int r)
{
    int rc;
    if (r == 0) {
        return TPS_SHM_OK;
    }
    if (r == EOWNERDEAD) {
        /* The holder died inside a critical section: put the tables
         * back in order, then let the lock be used again. */
        rc = tps_shm_repair(m);
        pthread_mutex_consistent(&m->hdr->lock);
        if (rc < 0) {
            pthread_mutex_unlock(&m->hdr->lock);
            return rc;
        }
        return TPS_SHM_OK;
    }
    if (r == ETIMEDOUT || r == EBUSY) {
        return TPS_SHM_ETIMEOUT;
    }
    /* EINVAL, ENOTRECOVERABLE, EDEADLK: the lock word is not one. */
    return TPS_SHM_ECORRUPT;
}

/* Take the lock, waiting until deadline (-1: forever; 0: try once). */
int
tps_shm_lock(tps_shm_map *m, int64_t deadline)
{
    struct timespec ts;
    int r = pthread_mutex_trylock(&m->hdr->lock);
    if (r == EBUSY && deadline != 0) {
        if (deadline < 0) {
            r = pthread_mutex_lock(&m->hdr->lock);
        }
        else {
            /* timedlock takes CLOCK_REALTIME: the same distance from now.
             * (Not clocklock: the sanitizers do not know that one.) */
            int64_t left = deadline - tps_shm_now(), at;
            clock_gettime(CLOCK_REALTIME, &ts);
            at = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec
                 + (left > 0 ? left : 0);
            ts.tv_sec = at / 1000000000;
            ts.tv_nsec = at % 1000000000;
            r = pthread_mutex_timedlock(&m->hdr->lock, &ts);
        }
    }
    return finish_lock(m, r);
}

void
tps_shm_unlock(tps_shm_map *m)
{
    pthread_mutex_unlock(&m->hdr->lock);
}

/* Under the lock.  Check block idx is in `state` (any taken state when
 * state is TPS_SHM_FREE) with a span inside the heap; give its span. */
int
tps_shm_block_check(tps_shm_map *m, uint32_t idx, uint32_t state,
                    uint64_t *off, uint64_t *len)
{
    tps_shm_block b;
    uint64_t g;
    if (idx >= m->nblocks) {
        return TPS_SHM_ECORRUPT;
    }
    memcpy(&b, &m->blocks[idx], sizeof(b));
    if (state == TPS_SHM_FREE ? (b.state == TPS_SHM_FREE
                                 || b.state > TPS_SHM_HELD)
                              : b.state != state) {
        return TPS_SHM_ECORRUPT;
    }
    if (b.off % TPS_SHM_GRANULE != 0) {
        return TPS_SHM_ECORRUPT;
    }
    g = b.off / TPS_SHM_GRANULE;
    if (g >= m->ngranules || b.len > m->heap_size
            || tps_shm_granules(b.len) > m->ngranules - g) {
        return TPS_SHM_ECORRUPT;
    }
    *off = b.off;
    *len = b.len;
    return TPS_SHM_OK;
}

/* Set or clear bits [from, from + n): a word at a time, so that a large
 * block costs as little as a small one, near enough. */
void
tps_shm_bits_set(uint64_t *bm, uint64_t from, uint64_t n, int on)
{
    uint64_t i = from, end = from + n;
    while (i < end) {
        uint64_t bit = i & 63, take = 64 - bit;
        uint64_t mask;
        if (take > end - i) {
            take = end - i;
        }
        mask = (take == 64 ? ~(uint64_t)0
                           : (((uint64_t)1 << take) - 1)) << bit;
        if (on) {
            bm[i >> 6] |= mask;
        }
        else {
            bm[i >> 6] &= ~mask;
        }
        i += take;
    }
}

/* Under the lock: the block cache entry k names while that block is
 * CACHED, else UINT32_MAX (a free entry).  The header is the peers': a
 * span is checked (tps_shm_block_check) before it is used. */
static uint32_t
cache_live(tps_shm_map *m, int k)
{
    uint32_t i = m->hdr->cache[k];
    if (i >= m->nblocks
            || __atomic_load_n(&m->blocks[i].state, __ATOMIC_RELAXED)
               != TPS_SHM_CACHED) {
        return UINT32_MAX;
    }
    return i;
}

/* Under the lock: a free entry of the cache, or -1. */
static int
cache_slot(tps_shm_map *m)
{
    for (int k = 0; k < TPS_SHM_NCACHE; k++) {
        if (cache_live(m, k) == UINT32_MAX) {
            return k;
        }
    }
    return -1;
}

/* Under the lock: give block idx's memory back and tell trackers.  A
 * large block keeps its span (and its pages: nothing is zeroed or given
 * back to the kernel) for the next block of its size. */
void
tps_shm_free_block(tps_shm_map *m, uint32_t idx)
{
    uint64_t off, len, n;
    tps_shm_header *h = m->hdr;
    uint32_t state = TPS_SHM_FREE;
    int k;
    if (idx >= m->nblocks) {
        return;
    }
    if (tps_shm_block_check(m, idx, TPS_SHM_FREE, &off, &len) == 0) {
        n = tps_shm_granules(len);
        if (n >= TPS_SHM_CACHE_MIN && (k = cache_slot(m)) >= 0) {
            h->cache[k] = idx;
            state = TPS_SHM_CACHED;
        }
        else {
            tps_shm_bits_set(m->bitmap, off / TPS_SHM_GRANULE, n, 0);
        }
        h->used_granules = h->used_granules >= n ? h->used_granules - n : 0;
    }
    __atomic_fetch_add(&m->blocks[idx].gen, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&m->blocks[idx].state, state, __ATOMIC_SEQ_CST);
    m->blocks[idx].pid = 0;
}

/* Under the lock: give the spans of the cached blocks back to the
 * bitmap (the heap or the block table ran out). */
void
tps_shm_cache_flush(tps_shm_map *m)
{
    uint32_t i;
    uint64_t off, len;
    for (int k = 0; k < TPS_SHM_NCACHE; k++) {
        if ((i = cache_live(m, k)) != UINT32_MAX) {
            /* A span a peer garbled is left to a repair's rebuild. */
            if (tps_shm_block_check(m, i, TPS_SHM_CACHED, &off, &len) == 0) {
                tps_shm_bits_set(m->bitmap, off / TPS_SHM_GRANULE,
                                 tps_shm_granules(len), 0);
            }
            __atomic_store_n(&m->blocks[i].state, TPS_SHM_FREE,
                             __ATOMIC_SEQ_CST);
        }
        m->hdr->cache[k] = UINT32_MAX;
    }
}

/* Under the lock: take a cached block of n granules for len bytes, or
 * return UINT32_MAX. */
static uint32_t
cache_take(tps_shm_map *m, uint64_t n, uint64_t len)
{
    uint32_t i;
    uint64_t off, clen;
    for (int k = 0; k < TPS_SHM_NCACHE; k++) {
        /* The size first (cheap), then the whole check. */
        if ((i = cache_live(m, k)) != UINT32_MAX
                && tps_shm_granules(m->blocks[i].len) == n
                && tps_shm_block_check(m, i, TPS_SHM_CACHED, &off,
                                       &clen) == 0
                && tps_shm_granules(clen) == n) {
            m->hdr->cache[k] = UINT32_MAX;
            m->blocks[i].len = len;
            return i;
        }
    }
    return UINT32_MAX;
}

/* The first run of n clear bits at or after `from`, or UINT64_MAX. */
static uint64_t
find_run(const uint64_t *bm, uint64_t ng, uint64_t from, uint64_t n)
{
    uint64_t run = 0, i = from;
    while (i < ng) {
        uint64_t w = bm[i >> 6];
        if ((i & 63) == 0 && i + 64 <= ng && (w == ~(uint64_t)0 || w == 0)) {
            if (w == 0) {
                run += 64;
                i += 64;
                if (run >= n) {
                    return i - run;
                }
            }
            else {
                run = 0;
                i += 64;
            }
            continue;
        }
        if (w & ((uint64_t)1 << (i & 63))) {
            run = 0;
        }
        else if (++run == n) {
            return i + 1 - n;
        }
        i++;
    }
    return UINT64_MAX;
}

static int
alloc_once(tps_shm_map *m, uint64_t len, uint32_t flags, uint32_t *idx)
{
    tps_shm_header *h = m->hdr;
    uint64_t n = tps_shm_granules(len), at;
    uint32_t start = h->alloc_hint, b = UINT32_MAX;

    if (n > m->ngranules) {
        return TPS_SHM_ENOSPACE;
    }
    if (n >= TPS_SHM_CACHE_MIN
            && (b = cache_take(m, n, len)) != UINT32_MAX) {
        goto found;
    }
    for (uint32_t k = 0; k < m->nblocks; k++) {
        uint32_t i = (uint32_t)(((uint64_t)start + k) % m->nblocks);
        if (m->blocks[i].state == TPS_SHM_FREE) {
            b = i;
            break;
        }
    }
    if (b == UINT32_MAX) {
        return TPS_SHM_ENOSPACE;
    }
    at = find_run(m->bitmap, m->ngranules, 0, n);
    if (at == UINT64_MAX) {
        return TPS_SHM_ENOSPACE;
    }
    tps_shm_bits_set(m->bitmap, at, n, 1);
    h->alloc_hint = (b + 1) % m->nblocks;
    m->blocks[b].off = at * TPS_SHM_GRANULE;
    m->blocks[b].len = len;
found:
    h->used_granules += n;
    m->blocks[b].flags = flags;
    m->blocks[b].pid = (int32_t)getpid();
    m->blocks[b].start = tps_shm_own_start();
    __atomic_store_n(&m->blocks[b].state, TPS_SHM_OWNED, __ATOMIC_SEQ_CST);
    *idx = b;
    return TPS_SHM_OK;
}

/* Under the lock: a block of len bytes owned by this process; when the
 * heap is full, what dead processes held is taken back first. */
int
tps_shm_alloc(tps_shm_map *m, uint64_t len, uint32_t flags, uint32_t *idx)
{
    int rc, full;
    int64_t now, last;
    if (len > m->heap_size) {
        return TPS_SHM_ENOSPACE;
    }
    /* When the blocks in use leave no room (cached spans are free
     * room, so none of them fits either), neither the cache nor a scan
     * of the bitmap can help: a sender waiting on a full heap would
     * otherwise scan the whole bitmap, whose length grows with the
     * heap, and lose the cache at every try.  (A repair recounts
     * used_granules from the block table.) */
    full = m->hdr->used_granules > m->ngranules
           || tps_shm_granules(len) > m->ngranules - m->hdr->used_granules;
    rc = TPS_SHM_ENOSPACE;
    if (!full) {
        rc = alloc_once(m, len, flags, idx);
        if (rc != TPS_SHM_ENOSPACE) {
            return rc;
        }
        /* The cache's spans go back before anything else is tried. */
        tps_shm_cache_flush(m);
        rc = alloc_once(m, len, flags, idx);
        if (rc != TPS_SHM_ENOSPACE) {
            return rc;
        }
    }
    /* A sweep asks the kernel about every holder: when a busy sender
     * keeps the heap full, sweep at most every SWEEP_NS (a value from
     * the future, written by another process, counts as old). */
    now = tps_shm_now();
    last = m->hdr->last_sweep;
    if (last <= now && last > now - SWEEP_NS) {
        return rc;
    }
    m->hdr->last_sweep = now;
    if (tps_shm_reclaim(m) > 0) {
        tps_shm_cache_flush(m);
        rc = alloc_once(m, len, flags, idx);
    }
    return rc;
}

/* Under the lock: items queued, or UINT64_MAX when the counters are
 * not possible. */
uint64_t
tps_shm_queued(tps_shm_map *m)
{
    uint64_t q = m->hdr->tail - m->hdr->head;
    return q > m->nslots ? UINT64_MAX : q;
}

/* Under the lock: TPS_SHM_OK when n more items fit. */
int
tps_shm_room(tps_shm_map *m, uint64_t n)
{
    uint64_t q = tps_shm_queued(m);
    if (q == UINT64_MAX) {
        /* Drops the queue and frees its blocks: the next send works. */
        (void)tps_shm_repair(m);
        return TPS_SHM_ECORRUPT;
    }
    if (m->hdr->closed) {
        return TPS_SHM_ECLOSED;
    }
    return q + n <= m->nslots ? TPS_SHM_OK : TPS_SHM_EFULL;
}

/* Under the lock, after tps_shm_room(): queue *s (its block, if any, is
 * OWNED by this process). */
int
tps_shm_push(tps_shm_map *m, const tps_shm_slot *s)
{
    tps_shm_header *h = m->hdr;
    int rc = tps_shm_room(m, 1);
    if (rc < 0) {
        return rc;
    }
    memcpy(&m->slots[h->tail % m->nslots], s, sizeof(*s));
    if (s->kind == TPS_SHM_SLOT_BLOCK) {
        m->blocks[s->block].state = TPS_SHM_QUEUED;
    }
    /* Atomic: qsize() and friends read it without the lock. */
    __atomic_store_n(&h->tail, h->tail + 1, __ATOMIC_RELEASE);
    h->sent++;
    return TPS_SHM_OK;
}

/* Under the lock: take the oldest item into *out.  A block item's block
 * becomes HELD by this process.  A slot that fails its checks is dropped
 * (counted), the tables are repaired, and TPS_SHM_ECORRUPT reported: the
 * next item is fine. */
int
tps_shm_pop(tps_shm_map *m, tps_shm_slot *out)
{
    tps_shm_header *h = m->hdr;
    uint64_t q = tps_shm_queued(m), off, len;
    if (q == UINT64_MAX) {
        (void)tps_shm_repair(m);
        return TPS_SHM_ECORRUPT;
    }
    if (q == 0) {
        return h->closed ? TPS_SHM_ECLOSED : TPS_SHM_EEMPTY;
    }
    memcpy(out, &m->slots[h->head % m->nslots], sizeof(*out));
    __atomic_store_n(&h->head, h->head + 1, __ATOMIC_RELEASE);
    h->received++;
    if (out->kind == TPS_SHM_SLOT_INLINE && out->len <= TPS_SHM_INLINE) {
        return TPS_SHM_OK;
    }
    if (out->kind == TPS_SHM_SLOT_BLOCK
            && tps_shm_block_check(m, out->block, TPS_SHM_QUEUED, &off,
                                   &len) == 0
            && len == out->len) {
        m->blocks[out->block].pid = (int32_t)getpid();
        m->blocks[out->block].start = tps_shm_own_start();
        m->blocks[out->block].state = TPS_SHM_HELD;
        out->gen = m->blocks[out->block].gen;
        out->flags = (out->flags & ~TPS_SHM_WRITABLE)
                     | (m->blocks[out->block].flags & TPS_SHM_WRITABLE);
        /* The span as checked, not as the segment says now. */
        out->len = len;
        memcpy(out->data, &off, sizeof(off));
        return TPS_SHM_OK;
    }
    h->dropped++;
    /* The slot's block, if it had a real one, is now referred to by no
     * slot: the repair frees it. */
    (void)tps_shm_repair(m);
    return TPS_SHM_ECORRUPT;
}

/* Sleep until *word is no longer `seen`, the deadline passes (-1: none)
 * or a signal arrives.  A shared futex: waiters may be in any process. */
int
tps_shm_wait(uint32_t *word, uint32_t seen, int64_t deadline)
{
    struct timespec ts, *tsp = NULL;
    long r;
    if (deadline >= 0) {
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tsp = &ts;
    }
    r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, seen, tsp, NULL,
                FUTEX_BITSET_MATCH_ANY);
    if (r == 0 || errno == EAGAIN) {
        return TPS_SHM_OK;
    }
    if (errno == ETIMEDOUT) {
        return TPS_SHM_ETIMEOUT;
    }
    if (errno == EINTR) {
        return TPS_SHM_EINTR;
    }
    return TPS_SHM_ESYS;
}

/* Bump *word and wake its sleepers, if *waiters says there may be any.
 * *waiters is a flag, not a count: a sleeper sets it (under the lock,
 * with the value of *word it will sleep on) and the first waker clears
 * it and wakes them all, so a stream of sends makes one system call per
 * sleep of the receiver, not one per send.  A sleeper that ends on its
 * own leaves it set: one needless wake-up later. */
void
tps_shm_wake(uint32_t *word, uint32_t *waiters)
{
    __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(waiters, __ATOMIC_SEQ_CST)
            && __atomic_exchange_n(waiters, 0, __ATOMIC_SEQ_CST)) {
        syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
}
