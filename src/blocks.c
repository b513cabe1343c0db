/* blocks.c - the cache-line block allocator behind records and copies.
 *
 * Records and payload copies of up to 16 KiB take their memory here
 * instead of from malloc; blocks.h has the inline fast path (a slot of the calling
 * thread's magazine) and this file the rest: magazine reloads, the
 * process-wide depots, the regions blocks are carved from, and the fork
 * handler of the depots' locks.
 *
 * Most records live for microseconds, and a channel's receiver frees what
 * its sender allocates.  glibc's malloc is slow when one thread frees what
 * another allocated, and memory the freeing thread wrote into (a
 * free-list link) costs the sender a cache miss to reuse.  So blocks are:
 *  - whole cache lines, line-aligned: no two blocks share a line;
 *  - kept, when free, in per-thread magazines: arrays of addresses, so
 *    that freeing a block writes nothing into it, and the allocator knows
 *    which blocks it hands out next and fetches their lines ahead;
 *  - moved between threads a magazine at a time through a process-wide
 *    depot per kind (one mutex operation per magazine of blocks): a
 *    receiver's full magazines go to the depot, and a sender whose
 *    magazines ran dry takes them.  A thread's magazines go back to the
 *    depot when it exits.
 * The copy classes (129 bytes to 16 KiB) work the same way, with fewer
 * blocks per magazine and fewer full magazines in the depot the larger
 * the blocks (about 64 KiB a magazine and 4 MiB a depot), and a thread
 * gets their magazines on its first block of the class.
 * The small classes (32 to 128 bytes, compact blocks of queued immediate
 * items) are the exception to whole lines: 16-aligned, two or more to a
 * line, since they are made to sit queued, where their size is the memory
 * a queued item takes; they too come in magazines of a thread's own from
 * its first block of the class.
 * The cache and its magazines are plain malloc memory, not Python's raw
 * allocator: a thread gives them back when it exits, possibly after the
 * interpreter it ran finished.
 */
#include "blocks.h"
#include "fork.h"

#include <sys/mman.h>

#define MAG TPS_BLOCK_MAG
#define DEPOT_MAX 64         /* magazines a depot keeps, at most */
#define MAG_BYTES (64 << 10)         /* a copy class's magazine, about */
#define DEPOT_BYTES (4 << 20)        /* its depot's full ones, about */
#define AHEAD TPS_BLOCK_AHEAD
#define REGION_SIZE (32 << 20)   /* address space per kind of block */

typedef tps_magazine magazine;
typedef tps_block_cache thread_cache;

typedef struct {
    pthread_mutex_t mutex;
    size_t size;                /* of each block, whole lines */
    int cap;                    /* blocks per magazine */
    int max_full;               /* full magazines kept */
    magazine *full;             /* magazines holding blocks */
    magazine *empty;            /* spare magazines */
    int nfull, nempty;
    atomic_llong live;          /* blocks taken from memory, not given back */
    char *region, *region_end;  /* the region once reserved */
    char *region_next;          /* its first block never handed out */
    void *region_free;          /* its blocks given back, linked */
    int region_failed;          /* the reservation failed: no region */
} depot;

enum { K_TWO = TPS_BLOCK_TWO, K_THREE = TPS_BLOCK_THREE,
       NKINDS = TPS_BLOCK_KINDS };

#define CLAMP(x, lo, hi) ((x) < (lo) ? (lo) : (x) > (hi) ? (hi) : (x))
#define KIND_CAP(k) ((k) < TPS_BLOCK_COPY_FIRST ? MAG \
    : (int)CLAMP(MAG_BYTES / TPS_BLOCK_SIZE(k), 8, MAG))
#define KIND_MAX_FULL(k) ((k) < TPS_BLOCK_COPY_FIRST ? DEPOT_MAX \
    : (int)CLAMP(DEPOT_BYTES / (KIND_CAP(k) * TPS_BLOCK_SIZE(k)), 4, \
                 DEPOT_MAX))
#define DEPOT(k) {.mutex = PTHREAD_MUTEX_INITIALIZER, \
                  .size = TPS_BLOCK_SIZE(k), .cap = KIND_CAP(k), \
                  .max_full = KIND_MAX_FULL(k)}

static depot depots[NKINDS] = {
    DEPOT(0), DEPOT(1), DEPOT(2), DEPOT(3), DEPOT(4), DEPOT(5), DEPOT(6),
    DEPOT(7), DEPOT(8), DEPOT(9), DEPOT(10), DEPOT(11), DEPOT(12),
    DEPOT(13), DEPOT(14), DEPOT(15), DEPOT(16), DEPOT(17), DEPOT(18),
    DEPOT(19),
};
_Static_assert(NKINDS == 20, "one depot per kind");

/* The magazine of a copy class a thread has not used yet: empty and full
 * at once, so that both fast paths take the slow path, which gives the
 * thread magazines of its own.  Never written. */
static magazine no_magazine = {.n = 0, .cap = 0};

TPS_TLS tps_block_cache *tps_block_cache_tls;
#define my_cache tps_block_cache_tls
static TPS_TLS int my_cache_gone;      /* set once the thread let it go */
static pthread_key_t cache_key;
static int cache_key_ok;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* Blocks come from a region of address space reserved per kind at first
 * use (only the pages touched take memory), carved in order and never
 * unmapped: blocks given back go on the region's free list for reuse.
 * posix_memalign, used once a region is full, costs about 130 bytes more
 * per block. */
static int
in_region(depot *d, void *p)
{
    return (char *)p >= d->region && (char *)p < d->region_end;
}

/* A block from the region, or NULL when it is full.  Under d->mutex. */
static void *
region_take(depot *d)
{
    TPS_ASSERT_LOCKED(&d->mutex);
    if (d->region == NULL && !d->region_failed) {
        void *r = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) {
            d->region_failed = 1;
        }
        else {
            /* The region holds whole blocks only: 32 MiB is not a
             * multiple of three lines, and a block carved from its last
             * two lines would have its third line past the mapping. */
            d->region = d->region_next = r;
            d->region_end = d->region + REGION_SIZE / d->size * d->size;
        }
    }
    void *p = d->region_free;
    if (p != NULL) {
        TPS_BLOCK_UNPOISON(p, d->size);
        d->region_free = *(void **)p;
    }
    else if (d->region != NULL
             && (size_t)(d->region_end - d->region_next) >= d->size)
    {
        p = d->region_next;
        d->region_next += d->size;
    }
    assert(p == NULL || (in_region(d, p)
                         && (char *)p + d->size <= d->region_end
                         && ((char *)p - d->region) % d->size == 0));
    return p;
}

static void *
block_from_memory(depot *d)
{
    pthread_mutex_lock(&d->mutex);
    void *p = region_take(d);
    pthread_mutex_unlock(&d->mutex);
    /* A small class needs 16 bytes of alignment only: malloc's own, which
     * costs 16 bytes more per block where a line's costs about 130. */
    size_t align = d - depots >= TPS_BLOCK_SMALL_FIRST ? 16 : TPS_LINE;
    if (p == NULL && posix_memalign(&p, align, d->size) != 0) {
        return NULL;
    }
    atomic_fetch_add_explicit(&d->live, 1, memory_order_relaxed);
    return p;
}

/* Give n blocks back. */
static void
blocks_delete(depot *d, void **blocks, int n)
{
    int others = 0;
    assert(n >= 0 && n <= MAG);
    pthread_mutex_lock(&d->mutex);
    for (int i = 0; i < n; i++) {
        TPS_BLOCK_UNPOISON(blocks[i], d->size);
        if (in_region(d, blocks[i])) {
            *(void **)blocks[i] = d->region_free;
            d->region_free = blocks[i];
            TPS_BLOCK_POISON(blocks[i], d->size);
        }
        else {
            blocks[others++] = blocks[i];
        }
    }
    pthread_mutex_unlock(&d->mutex);
    for (int i = 0; i < others; i++) {
        free(blocks[i]);
    }
    atomic_fetch_sub_explicit(&d->live, n, memory_order_relaxed);
}

/* Push m on one of the depot's lists unless it holds `max` already;
 * whether it did. */
static int
depot_push(depot *d, magazine **list, int *count, int max, magazine *m)
{
    pthread_mutex_lock(&d->mutex);
    int room = *count < max;
    if (room) {
        m->next = *list;
        *list = m;
        (*count)++;
    }
    pthread_mutex_unlock(&d->mutex);
    return room;
}

/* Pop a magazine from one of the depot's lists, or NULL. */
static magazine *
depot_pop(depot *d, magazine **list, int *count)
{
    pthread_mutex_lock(&d->mutex);
    magazine *m = *list;
    if (m != NULL) {
        *list = m->next;
        (*count)--;
    }
    pthread_mutex_unlock(&d->mutex);
    return m;
}

/* Give a magazine to the depot: kept if it holds blocks and the depot has
 * room, else its blocks go back to memory and it is kept as a spare (or
 * freed when the depot has enough spares). */
static void
depot_give(depot *d, magazine *m)
{
    if (m == &no_magazine) {
        return;
    }
    if (m->n > 0 && depot_push(d, &d->full, &d->nfull, d->max_full, m)) {
        return;
    }
    blocks_delete(d, m->blocks, m->n);
    m->n = 0;
    if (!depot_push(d, &d->empty, &d->nempty, DEPOT_MAX, m)) {
        free(m);
    }
}

/* A magazine holding blocks from the depot, or NULL. */
static magazine *
depot_take_full(depot *d)
{
    return depot_pop(d, &d->full, &d->nfull);
}

/* An empty magazine (a spare of the depot's or a new one), or NULL. */
static magazine *
depot_take_empty(depot *d)
{
    magazine *m = depot_pop(d, &d->empty, &d->nempty);
    if (m == NULL) {
        m = malloc(sizeof(magazine));
        if (m != NULL) {
            m->n = 0;
            m->cap = d->cap;
        }
    }
    return m;
}

/* At thread exit: the thread's magazines go to the depots. */
static void
cache_release(void *arg)
{
    thread_cache *tc = arg;
    for (int k = 0; k < NKINDS; k++) {
        depot_give(&depots[k], tc->loaded[k]);
        depot_give(&depots[k], tc->prev[k]);
    }
    free(tc);
    if (my_cache == tc) {
        my_cache = NULL;
        my_cache_gone = 1;
    }
}

static void
cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_release) == 0;
}

/* The current thread's cache, set up on first use; NULL when it cannot
 * have one (no memory, or the thread is exiting): blocks then come from
 * and go to memory directly. */
static thread_cache *
cache_setup(void)
{
    if (my_cache_gone) {
        return NULL;
    }
    pthread_once(&cache_once, cache_key_create);
    if (!cache_key_ok) {
        return NULL;
    }
    thread_cache *tc = calloc(1, sizeof(thread_cache));
    if (tc == NULL) {
        return NULL;
    }
    for (int k = 0; k < NKINDS; k++) {
        if (k >= TPS_BLOCK_COPY_FIRST) {
            tc->loaded[k] = tc->prev[k] = &no_magazine;
            continue;
        }
        tc->loaded[k] = depot_take_empty(&depots[k]);
        tc->prev[k] = depot_take_empty(&depots[k]);
        if (tc->loaded[k] == NULL || tc->prev[k] == NULL) {
            goto error;
        }
    }
    if (pthread_setspecific(cache_key, tc) != 0) {
        goto error;
    }
    my_cache = tc;
    return tc;

error:
    for (int k = 0; k < TPS_BLOCK_COPY_FIRST; k++) {
        free(tc->loaded[k]);
        free(tc->prev[k]);
    }
    free(tc);
    return NULL;
}

/* The thread's first block of a copy class: its magazines of the class.
 * Whether it has them (else blocks come from and go to memory). */
static int
first_of_kind(thread_cache *tc, int kind)
{
    depot *d = &depots[kind];
    if (tc->loaded[kind] != &no_magazine) {
        return 1;
    }
    magazine *m = depot_take_empty(d), *p = depot_take_empty(d);
    if (m == NULL || p == NULL) {
        free(m);
        free(p);
        return 0;
    }
    tc->loaded[kind] = m;
    tc->prev[kind] = p;
    return 1;
}

static inline thread_cache *
cache_get(void)
{
    thread_cache *tc = my_cache;
    return tc != NULL ? tc : cache_setup();
}

/* Start fetching, for writing, the blocks a magazine hands out next. */
static inline void
fetch_ahead(magazine *m, size_t size)
{
    for (int i = m->n - 1; i >= 0 && i >= m->n - AHEAD; i--) {
        tps_prefetch_for_write(m->blocks[i], size);
    }
}

/* The thread's loaded magazine is empty (to allocate) or full (to free):
 * load the previous one if it is the other way round (full, or empty),
 * else trade the previous one with the depot for one that is.  The new
 * loaded magazine, or NULL when neither the depot nor memory has one. */
static magazine *
reload(thread_cache *tc, int kind, int to_allocate)
{
    depot *d = &depots[kind];
    magazine *m = tc->loaded[kind], *p = tc->prev[kind];
    if (to_allocate ? p->n == 0 : p->n > 0) {
        magazine *q = to_allocate ? depot_take_full(d) : depot_take_empty(d);
        if (q == NULL) {
            return NULL;
        }
        depot_give(d, p);
        p = q;
    }
    tc->loaded[kind] = p;
    tc->prev[kind] = m;
    return p;
}

/* tps_block_alloc() when the thread has no cache yet or its loaded
 * magazine is empty. */
void *
tps_block_alloc_slow(int kind)
{
    depot *d = &depots[kind];
    thread_cache *tc = cache_get();
    if (tc == NULL || !first_of_kind(tc, kind)) {
        return block_from_memory(d);
    }
    magazine *m = tc->loaded[kind];
    if (m->n == 0) {
        m = reload(tc, kind, 1);
        if (m == NULL) {
            return block_from_memory(d);
        }
        fetch_ahead(m, kind < TPS_BLOCK_COPY_FIRST
                       || kind >= TPS_BLOCK_SMALL_FIRST ? d->size
                                                        : 2 * TPS_LINE);
    }
    /* The loaded magazine holds blocks now: the fast path takes one. */
    return tps_block_alloc(kind);
}

/* tps_block_free() when the thread has no cache yet or its loaded
 * magazine is full. */
void
tps_block_free_slow(int kind, void *b)
{
    depot *d = &depots[kind];
    thread_cache *tc = cache_get();
    if (tc == NULL || !first_of_kind(tc, kind)) {
        blocks_delete(d, &b, 1);
        return;
    }
    magazine *m = tc->loaded[kind];
    if (m->n == m->cap) {
        m = reload(tc, kind, 0);
        if (m == NULL) {
            blocks_delete(d, &b, 1);
            return;
        }
    }
    /* The loaded magazine has room now: the fast path puts b there. */
    tps_block_free(kind, b);
}

/* Blocks taken from memory and not given back, per kind, for tests. */
void
tps_block_counts(long long *two, long long *three)
{
    *two = atomic_load(&depots[K_TWO].live);
    *three = atomic_load(&depots[K_THREE].live);
}

/* Of those, the blocks kept for reuse in the depots and in the calling
 * thread's magazines, per kind, for tests (the difference is what is in
 * use, or cached by other threads). */
void
tps_block_cached(long long *two, long long *three)
{
    long long n[NKINDS] = {0};
    for (int k = 0; k < NKINDS; k++) {
        depot *d = &depots[k];
        pthread_mutex_lock(&d->mutex);
        for (magazine *m = d->full; m != NULL; m = m->next) {
            n[k] += m->n;
        }
        pthread_mutex_unlock(&d->mutex);
        if (my_cache != NULL) {
            n[k] += my_cache->loaded[k]->n + my_cache->prev[k]->n;
        }
    }
    *two = n[K_TWO];
    *three = n[K_THREE];
}

/* Live and cached blocks of the kinds first..end-1. */
static void
kinds_counts(int first, int end, long long *live, long long *cached)
{
    *live = *cached = 0;
    for (int k = first; k < end; k++) {
        depot *d = &depots[k];
        *live += atomic_load(&d->live);
        pthread_mutex_lock(&d->mutex);
        for (magazine *m = d->full; m != NULL; m = m->next) {
            *cached += m->n;
        }
        pthread_mutex_unlock(&d->mutex);
        if (my_cache != NULL) {
            *cached += my_cache->loaded[k]->n + my_cache->prev[k]->n;
        }
    }
}

void
tps_block_copy_counts(long long *live, long long *cached)
{
    kinds_counts(TPS_BLOCK_COPY_FIRST, TPS_BLOCK_SMALL_FIRST, live, cached);
}

void
tps_block_small_counts(long long *live, long long *cached)
{
    kinds_counts(TPS_BLOCK_SMALL_FIRST, NKINDS, live, cached);
}

void
tps_blocks_atfork(tps_fork_phase phase)
{
    /* The depots' mutexes guard a few pointer moves (and an mmap): taken
     * before the fork so that the child gets whole lists.  The caches
     * of the parent's other threads are lost to the child: their blocks
     * stay allocated. */
    for (int k = 0; k < NKINDS; k++) {
        switch (phase) {
        case TPS_FORK_PREPARE:
            pthread_mutex_lock(&depots[k].mutex);
            break;
        case TPS_FORK_PARENT:
            pthread_mutex_unlock(&depots[k].mutex);
            break;
        case TPS_FORK_CHILD:
            pthread_mutex_unlock(&depots[k].mutex);
            break;
        }
    }
}
