/* record.c - share records: share, rebuild, release.
 *
 * A record (struct TpShare_Record) carries one shared value between
 * interpreters: the registration used to share it, the owner interpreter
 * and the hook's data.  It lives in raw memory and is refcounted
 * atomically, so any interpreter (or none) may hold it.
 *
 * Messages.  Sharing a container shares its items from inside the
 * container's hook; those nested calls join one message.  While a message
 * is built, a per-thread context remembers every object already shared in
 * it, so an object met twice becomes one record referenced twice (flag
 * TPS_REC_DUP), and rebuilding memoizes such records so the receiver gets
 * one object twice (DESIGN.md D9).  The context also tracks the position
 * of the item being shared, for error messages, and whether anything
 * nested is owner-bound (a record is owner-bound when its own data or any
 * nested record is: it must then be freed in its owner, D4).
 *
 * Identity across messages.  A channel with identity on passes its
 * interpreter's identity table (identity.c) to the share and the rebuild
 * of each message; then every record of a value that can never change,
 * at any depth, carries the serial of the object it was made from, and
 * the receiver looks each one up before rebuilding it: an object is the
 * same object wherever it sits in the messages it travels in.
 *
 * Release.  When the last holder lets go, a neutral record is freed where
 * it is; an owner-bound one is freed at once if the current interpreter
 * is its owner, and otherwise queued on the owner's release list
 * (interp.c), which never fails and never loses a request.
 */
#include "tpshare_internal.h"
#include "ptrmap.h"

#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

/* Under AddressSanitizer a cached block is poisoned, so that a use of a
 * record after it was freed is caught although its memory is kept. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define BLOCK_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define BLOCK_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define BLOCK_POISON(p, n) ((void)(p), (void)(n))
#define BLOCK_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* ---------------------------------------------------------------------
 * Per-thread contexts of the message being shared or rebuilt.
 */

/* One level of the container path, on the C stack of tps_share(). */
typedef struct frame {
    struct frame *up;
    PyObject *obj;       /* borrowed: the object being shared */
    Py_ssize_t index;    /* item being shared inside obj, or -1 */
} frame;

typedef struct {
    int depth;
    int any_bound;       /* a record finished at this level is bound */
    int any_mutable;     /* ... or not TPS_REC_IMMUTABLE */
    int64_t owner;       /* the sharing interpreter, set at top level */
    frame *top;
    ptrmap memo;         /* obj -> record (holds a record reference) */
    tps_identity *identity;  /* tags records of the message, or NULL */
} share_ctx;

typedef struct {
    int depth;
    ptrmap memo;         /* record -> object (holds a new reference) */
    tps_identity *identity;  /* looks tagged records up, or NULL */
} rebuild_ctx;

static TPS_TLS share_ctx sctx;
static TPS_TLS rebuild_ctx rctx;

/* Nesting deeper than this raises RecursionError (C stack safety). */
#define MAX_DEPTH 2000

/* ---------------------------------------------------------------------
 * Blocks: the memory of records and of small payload copies.
 *
 * Most records live for microseconds, and a channel's receiver frees what
 * its sender allocates.  malloc was the largest part of a record's cost
 * (glibc is slow when one thread frees what another allocated), and
 * memory the freeing thread wrote into (a free-list link) cost the sender
 * a cache miss to reuse.  So blocks are:
 *  - whole cache lines, line-aligned: no two blocks share a line;
 *  - kept, when free, in per-thread magazines: arrays of addresses, so
 *    that freeing a block writes nothing into it, and the allocator knows
 *    which blocks it hands out next and fetches their lines ahead;
 *  - moved between threads a magazine at a time through a process-wide
 *    depot per kind (one mutex operation per MAG blocks): a receiver's
 *    full magazines go to the depot, and a sender whose magazines ran dry
 *    takes them.  A thread's magazines go back to the depot when it exits.
 * The cache and its magazines are plain malloc memory, not Python's raw
 * allocator: a thread gives them back when it exits, possibly after the
 * interpreter it ran finished.
 * A record's block has one more line after the record for a payload of up
 * to TPS_LINE bytes (the copy of a 64-byte bytes or str), so the commonest
 * small message is one block of three adjacent lines.  Copies of up to
 * TPS_SMALL_MAX bytes take a small block of their own. */
#define MAG 128              /* blocks per magazine */
#define DEPOT_MAX 64         /* full magazines a depot keeps */
#define AHEAD 4              /* blocks fetched ahead of their allocation */
#define REGION_SIZE (32 << 20)   /* address space per kind of block */

#define REC_SPAN (2 * TPS_LINE)     /* the record itself */
#define TAIL_MAX TPS_LINE           /* the payload line after it */
_Static_assert(sizeof(TpShare_Record) <= REC_SPAN, "record fits 2 lines");

typedef struct magazine {
    struct magazine *next;      /* in the depot */
    int n;
    void *blocks[MAG];
} magazine;

typedef struct {
    pthread_mutex_t mutex;
    size_t size;                /* of each block, whole lines */
    magazine *full;             /* magazines holding blocks */
    magazine *empty;            /* spare magazines */
    int nfull, nempty;
    atomic_llong live;          /* blocks taken from memory, not given back */
    char *region, *region_end;  /* the region once reserved */
    char *region_next;          /* its first block never handed out */
    void *region_free;          /* its blocks given back, linked */
    int region_failed;          /* the reservation failed: no region */
} depot;

/* Two kinds: two lines (a record; a small copy) and three (a record with
 * its payload line). */
enum { K_TWO, K_THREE, NKINDS };
_Static_assert(TPS_SMALL_MAX == REC_SPAN, "small blocks are two lines");

static depot depots[NKINDS] = {
    {.mutex = PTHREAD_MUTEX_INITIALIZER, .size = REC_SPAN},
    {.mutex = PTHREAD_MUTEX_INITIALIZER, .size = REC_SPAN + TAIL_MAX},
};

/* A thread's two magazines per kind (Bonwick's scheme: a thread that
 * alternates between allocating and freeing around a magazine boundary
 * swaps them instead of visiting the depot). */
typedef struct {
    magazine *loaded[NKINDS];
    magazine *prev[NKINDS];
} thread_cache;

static TPS_TLS thread_cache *my_cache;
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
        BLOCK_UNPOISON(p, d->size);
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
block_new(depot *d)
{
    pthread_mutex_lock(&d->mutex);
    void *p = region_take(d);
    pthread_mutex_unlock(&d->mutex);
    if (p == NULL && posix_memalign(&p, TPS_LINE, d->size) != 0) {
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
        BLOCK_UNPOISON(blocks[i], d->size);
        if (in_region(d, blocks[i])) {
            *(void **)blocks[i] = d->region_free;
            d->region_free = blocks[i];
            BLOCK_POISON(blocks[i], d->size);
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

/* Push m on one of the depot's lists unless it holds DEPOT_MAX already;
 * whether it did. */
static int
depot_push(depot *d, magazine **list, int *count, magazine *m)
{
    pthread_mutex_lock(&d->mutex);
    int room = *count < DEPOT_MAX;
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
    if (m->n > 0 && depot_push(d, &d->full, &d->nfull, m)) {
        return;
    }
    blocks_delete(d, m->blocks, m->n);
    m->n = 0;
    if (!depot_push(d, &d->empty, &d->nempty, m)) {
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
    for (int k = 0; k < NKINDS; k++) {
        free(tc->loaded[k]);
        free(tc->prev[k]);
    }
    free(tc);
    return NULL;
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

/* A block of the kind (contents undefined), or NULL without an exception
 * when memory is exhausted. */
static void *
block_alloc(int kind)
{
    depot *d = &depots[kind];
    thread_cache *tc = cache_get();
    if (tc == NULL) {
        return block_new(d);
    }
    magazine *m = tc->loaded[kind];
    if (m->n == 0) {
        m = reload(tc, kind, 1);
        if (m == NULL) {
            return block_new(d);
        }
        fetch_ahead(m, d->size);
    }
    assert(m->n > 0 && m->n <= MAG);
    void *b = m->blocks[--m->n];
    BLOCK_UNPOISON(b, d->size);
    if (m->n >= AHEAD) {
        /* The blocks were last read (or written) by another thread: start
         * fetching the lines of the one handed out AHEAD calls later. */
        tps_prefetch_for_write(m->blocks[m->n - AHEAD], d->size);
    }
    return b;
}

static void
block_free(int kind, void *b)
{
    depot *d = &depots[kind];
    thread_cache *tc = cache_get();
    if (tc == NULL) {
        blocks_delete(d, &b, 1);
        return;
    }
    magazine *m = tc->loaded[kind];
    if (m->n == MAG) {
        m = reload(tc, kind, 0);
        if (m == NULL) {
            blocks_delete(d, &b, 1);
            return;
        }
    }
    assert(m->n >= 0 && m->n < MAG);
    BLOCK_POISON(b, d->size);
    m->blocks[m->n++] = b;
}

void *
tps_small_alloc(TpShare_Data *data, Py_ssize_t n)
{
    TpShare_Record *rec = (TpShare_Record *)(
        (char *)data - offsetof(TpShare_Record, data));
    if (n <= TAIL_MAX && (rec->flags & TPS_REC_LONG)) {
        rec->flags |= TPS_REC_TAIL;
        return (char *)rec + REC_SPAN;
    }
    if (n > TPS_SMALL_MAX) {
        return NULL;
    }
    void *ptr = block_alloc(K_TWO);
    if (ptr != NULL) {
        rec->flags |= TPS_REC_SMALL;
    }
    return ptr;
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

/* Whether sharing `obj` (borrowed) copies 17 to 64 bytes (a str or bytes
 * the built-in handlers copy): its record then gets the line after it to
 * hold them.  Other records take two lines. */
static inline int
wants_tail(PyObject *obj)
{
    Py_ssize_t n;
    if (PyBytes_CheckExact(obj)) {
        n = PyBytes_GET_SIZE(obj);
    }
    else if (PyUnicode_CheckExact(obj)) {
        n = PyUnicode_GET_LENGTH(obj) * PyUnicode_KIND(obj);
    }
    else {
        return 0;
    }
    return n > (Py_ssize_t)sizeof(((TpShare_Data *)0)->inline_data)
           && n <= TAIL_MAX;
}

/* Memos keep their table between messages unless it grew large. */
#define MEMO_KEEP_SLOTS 256

/* Memo tables allocated and not yet freed, in all threads, for tests. */
static atomic_long memo_tables;

long
tps_memo_tables(void)
{
    return atomic_load(&memo_tables);
}

/* A thread keeps its memos' tables only once a thread-specific key's
 * destructor will free them when it exits (as its block cache); without
 * the key a table is freed after each message. */
static TPS_TLS int memo_kept;
static pthread_key_t memo_key;
static int memo_key_ok;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;

/* Free a memo's table (it holds no reference any more). */
static void
memo_free(ptrmap *m)
{
    assert(m->used == 0);
    if (m->slots != NULL) {
        atomic_fetch_sub_explicit(&memo_tables, 1, memory_order_relaxed);
    }
    ptrmap_clear(m);
}

/* At thread exit: an exiting thread shares and rebuilds nothing, so its
 * memos hold no reference, only their tables. */
static void
memo_thread_exit(void *Py_UNUSED(arg))
{
    assert(sctx.depth == 0 && rctx.depth == 0);
    memo_kept = 0;
    memo_free(&sctx.memo);
    memo_free(&rctx.memo);
}

static void
memo_key_create(void)
{
    memo_key_ok = pthread_key_create(&memo_key, memo_thread_exit) == 0;
}

/* Whether the thread's tables will be freed at its exit: arranged on the
 * first call in each thread. */
static int
memo_keep(void)
{
    if (!memo_kept) {
        pthread_once(&memo_once, memo_key_create);
        memo_kept = memo_key_ok
                    && pthread_setspecific(memo_key, &memo_kept) == 0;
    }
    return memo_kept;
}

/* ptrmap_set() on one of the thread's memos, counting a new table.
 * Returns 0, or -1 on memory failure. */
static int
memo_set(ptrmap *m, void *key, void *value)
{
    assert(tps_thread_state() != NULL);   /* values need the GIL */
    int fresh = m->slots == NULL;
    if (ptrmap_set(m, key, value) < 0) {
        return -1;
    }
    if (fresh) {
        atomic_fetch_add_explicit(&memo_tables, 1, memory_order_relaxed);
    }
    return 0;
}

/* Empty a memo after a message (its references are dropped already). */
static void
memo_reset(ptrmap *m)
{
    if (m->slots != NULL && m->mask + 1 <= MEMO_KEEP_SLOTS && memo_keep()) {
        memset(m->slots, 0, (m->mask + 1) * sizeof(ptrslot));
        m->used = m->filled = 0;
    }
    else {
        m->used = 0;
        memo_free(m);
    }
}

/* Whether `obj` rebuilds as the very same object anyway (a singleton or
 * a small int, cached by every interpreter): no memo needed. */
int
tps_rebuilds_identical(PyObject *obj)
{
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        return 1;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        return !overflow && v >= -5 && v <= 256;
    }
    return 0;
}

/* The index of the item about to be shared by the current container
 * hook, for error messages.  Called by built-in container handlers. */
void
tps_share_set_index(Py_ssize_t index)
{
    if (sctx.top != NULL) {
        sctx.top->index = index;
    }
}

static void
share_memo_clear(void)
{
    if (sctx.memo.used == 0 && sctx.memo.filled == 0) {
        return;
    }
    PTRMAP_FOREACH(&sctx.memo, s) {
        tps_record_release(s->value);
    }
    memo_reset(&sctx.memo);
}

static void
rebuild_memo_clear(void)
{
    if (rctx.memo.used == 0 && rctx.memo.filled == 0) {
        return;
    }
    PTRMAP_FOREACH(&rctx.memo, s) {
        Py_DECREF((PyObject *)s->value);
    }
    memo_reset(&rctx.memo);
}

/* Raise NotShareableError for `obj` (borrowed), naming its position. */
static void
not_shareable(PyObject *obj)
{
    PyObject *path = NULL;
    frame *chain[64];
    int n = 0;

    for (frame *f = sctx.top; f != NULL && n < 64; f = f->up) {
        chain[n++] = f;
    }
    if (n == 0) {
        tps_set_not_shareable("objects of type '%.200s' are not shareable",
                              Py_TYPE(obj)->tp_name);
        return;
    }
    path = PyUnicode_FromString("");
    for (int i = n - 1; i >= 0 && path != NULL; i--) {
        PyObject *part;
        if (chain[i]->index >= 0) {
            part = PyUnicode_FromFormat(
                "%s%.100s[%zd]", i == n - 1 ? "" : " > ",
                Py_TYPE(chain[i]->obj)->tp_name, chain[i]->index);
        }
        else {
            part = PyUnicode_FromFormat(
                "%s%.100s", i == n - 1 ? "" : " > ",
                Py_TYPE(chain[i]->obj)->tp_name);
        }
        if (part == NULL) {
            Py_CLEAR(path);
            break;
        }
        PyUnicode_AppendAndDel(&path, part);
    }
    if (path == NULL) {
        return;
    }
    tps_set_not_shareable("objects of type '%.200s' are not shareable "
                          "(found at %U)", Py_TYPE(obj)->tp_name, path);
    Py_DECREF(path);
}

/* ---------------------------------------------------------------------
 * Share.
 */

static TpShare_Record *
record_alloc(tps_entry *entry, int64_t owner, int tail)
{
    TpShare_Record *rec = block_alloc(tail ? K_THREE : K_TWO);
    if (rec == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *rec = (TpShare_Record){0};
    atomic_init(&rec->refcnt, 1);
    rec->owner = owner;
    rec->entry = entry;
    rec->flags = tail ? TPS_REC_LONG : 0;
    tps_entry_incref(entry);
    return rec;
}

static void
record_dealloc(TpShare_Record *rec)
{
    /* Only a three-line block has the tail line. */
    assert(!(rec->flags & TPS_REC_TAIL) || (rec->flags & TPS_REC_LONG));
    if (rec->flags & TPS_REC_SMALL) {
        block_free(K_TWO, rec->data.ptr);
    }
    block_free((rec->flags & TPS_REC_LONG) ? K_THREE : K_TWO, rec);
}

/* Free a record that was never shared (its hook failed): no free hook. */
static void
record_discard(TpShare_Record *rec)
{
    tps_entry_decref(rec->entry);
    record_dealloc(rec);
}

static TpShare_Record *share_entry(PyObject *obj, tps_entry *entry,
                                   int64_t owner, tps_identity *id);

TpShare_Record *
tps_share(PyObject *obj)
{
    return share_entry(obj, NULL, -1, NULL);
}

TpShare_Record *
tps_share_with(PyObject *obj, tps_entry *entry)
{
    return share_entry(obj, entry, -1, NULL);
}

TpShare_Record *
tps_share_in(PyObject *obj, int64_t owner, tps_identity *id)
{
    return share_entry(obj, NULL, owner, id);
}

/* Share `obj` with `entry`, or with the registry's entry for its type when
 * `entry` is NULL.  `owner` is the current interpreter's ID when the
 * caller knows it, else -1.  `id` (top level only; nested calls use the
 * message's) tags the message's records for identity, or is NULL. */
static TpShare_Record *
share_entry(PyObject *obj, tps_entry *entry, int64_t owner, tps_identity *id)
{
    int top_level = sctx.depth == 0;
    TpShare_Record *rec = NULL;

    if (obj == NULL) {
        PyErr_SetString(PyExc_SystemError, "Share() of NULL");
        return NULL;
    }
    if (top_level) {
        /* A message starts with a clean context; `done` cleans it up. */
        assert(sctx.identity == NULL && sctx.top == NULL);
        sctx.identity = id;
    }
    int memoize = !top_level && !tps_rebuilds_identical(obj);
    if (memoize) {
        int found;
        rec = ptrmap_get(&sctx.memo, obj, &found);
        if (found) {
            tps_record_incref(rec);
            rec->flags |= TPS_REC_DUP;
            sctx.any_bound |= (rec->flags & TPS_REC_BOUND) != 0;
            sctx.any_mutable |= !(rec->flags & TPS_REC_IMMUTABLE);
            return rec;
        }
    }
    int looked_up = entry == NULL;   /* not a MemChannel's buffer entry */
    if (entry == NULL) {
        entry = tps_registry_fast(Py_TYPE(obj));
        if (entry == NULL) {
            entry = tps_registry_find(Py_TYPE(obj));
        }
    }
    if (entry == NULL) {
        if (!PyErr_Occurred()) {
            not_shareable(obj);
        }
        goto done;
    }
    if (sctx.depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum nesting depth exceeded while sharing");
        goto done;
    }
    if (top_level) {
        sctx.owner = owner >= 0 ? owner : tps_current_interp_id();
    }
    rec = record_alloc(entry, sctx.owner, looked_up && wants_tail(obj));
    if (rec == NULL) {
        goto done;
    }

    frame f = {sctx.top, obj, -1};
    int saved_bound = sctx.any_bound, saved_mutable = sctx.any_mutable;
    sctx.top = &f;
    sctx.any_bound = sctx.any_mutable = 0;
    sctx.depth++;
    int rc = entry->hooks.share(obj, &rec->data);
    sctx.depth--;
    sctx.top = f.up;
    int bound = sctx.any_bound || rec->data.obj != NULL
                || (rec->data.flags & TPSHARE_DATA_OWNER_BOUND);
    /* Immutable: a receiver may keep what it rebuilt for as long as it
     * likes (identity).  So the value never changes, and its rebuild holds
     * nothing of the owner's: an owner-bound record qualifies only when
     * its hooks copy (large bytes: the receiver copies them out of the
     * sender's object), never when the rebuild is a view of the owner's
     * memory, which a kept object would pin. */
    int mutable = sctx.any_mutable
                  || !(entry->hooks.flags & TPSHARE_IMMUTABLE)
                  || (bound && !(entry->hooks.flags & TPSHARE_COPIES));
    sctx.any_bound = saved_bound | bound;
    sctx.any_mutable = saved_mutable | mutable;
    if (!mutable) {
        rec->flags |= TPS_REC_IMMUTABLE;
    }

    /* Built-in hooks are trusted; others are checked for an exception
     * left behind by a "successful" call. */
    if (rc < 0 || (!entry->immortal && PyErr_Occurred())) {
        if (rc == 0) {
            /* The hook succeeded yet left an exception: undo its work. */
            PyObject *exc = PyErr_GetRaisedException();
            tps_record_free(rec);
            PyErr_Format(PyExc_SystemError,
                         "share hook of '%s' returned success with an "
                         "exception set", entry->name);
            PyObject *cur = PyErr_GetRaisedException();
            PyException_SetCause(cur, exc);
            PyErr_SetRaisedException(cur);
        }
        else {
            record_discard(rec);
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_SystemError,
                             "share hook of '%s' failed without setting "
                             "an exception", entry->name);
            }
        }
        rec = NULL;
        goto done;
    }
    if (bound) {
        tps_interp *st = tps_interp_current();
        if (st == NULL) {
            tps_record_free(rec);
            rec = NULL;
            goto done;
        }
        rec->flags |= TPS_REC_BOUND;
        rec->ownerst = st;
        tps_interp_incref(st);
        tps_interp_export_add(st, 1);
    }
    /* Tag before memoizing: a second occurrence in this message reuses
     * the record, serial included. */
    if (sctx.identity != NULL && !mutable
        && (memoize || (top_level && !tps_rebuilds_identical(obj)))
        && tps_identity_tag(sctx.identity, rec, obj) < 0)
    {
        tps_record_release(rec);
        rec = NULL;
        goto done;
    }
    if (memoize && memo_set(&sctx.memo, obj, rec) == 0) {
        /* Without memory for the memo the object is simply shared again
         * if met again: identity is lost, nothing else. */
        tps_record_incref(rec);
    }

done:
    if (top_level) {
        share_memo_clear();
        sctx.identity = NULL;
    }
    return rec;
}

/* ---------------------------------------------------------------------
 * Rebuild.
 */

PyObject *
tps_rebuild(TpShare_Record *rec)
{
    int top_level = rctx.depth == 0;
    PyObject *res = NULL;

    if (rec == NULL) {
        PyErr_SetString(PyExc_SystemError, "Rebuild() of NULL");
        return NULL;
    }
    if (!top_level && (rec->flags & TPS_REC_DUP)) {
        int found;
        res = ptrmap_get(&rctx.memo, rec, &found);
        if (found) {
            return Py_NewRef(res);
        }
    }
    if (rec->serial != 0 && rctx.identity != NULL) {
        /* Sent before (in this message or an earlier one, at any depth):
         * the object rebuilt then, while this interpreter holds it. */
        res = tps_identity_lookup(rctx.identity, rec);
        if (res != NULL) {
            goto done;
        }
    }
    tps_entry *local = tps_registry_find_for_rebuild(rec->entry);
    if (local == NULL) {
        goto done;
    }
    if (rctx.depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum nesting depth exceeded while rebuilding");
        goto done;
    }
    rctx.depth++;
    res = local->hooks.rebuild(local->type, &rec->data);
    rctx.depth--;

    if (res == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_SystemError,
                         "rebuild hook of '%s' returned NULL without "
                         "setting an exception", local->name);
        }
        goto done;
    }
    if (!local->immortal && PyErr_Occurred()) {
        Py_CLEAR(res);
        PyObject *exc = PyErr_GetRaisedException();
        PyErr_Format(PyExc_SystemError,
                     "rebuild hook of '%s' returned a result with an "
                     "exception set", local->name);
        PyObject *cur = PyErr_GetRaisedException();
        PyException_SetCause(cur, exc);
        PyErr_SetRaisedException(cur);
        goto done;
    }
    if (!(local->hooks.flags & TPSHARE_ANY_RESULT) && local->type != NULL
        && !PyObject_TypeCheck(res, local->type))
    {
        PyErr_Format(PyExc_TypeError,
                     "rebuild hook of '%s' returned a '%.200s', not a "
                     "'%.200s'", local->name, Py_TYPE(res)->tp_name,
                     local->type->tp_name);
        Py_CLEAR(res);
        goto done;
    }
    if (rec->serial != 0 && rctx.identity != NULL) {
        tps_identity_remember(rctx.identity, rec, res);
    }
    if (!top_level && (rec->flags & TPS_REC_DUP)
        && memo_set(&rctx.memo, rec, res) == 0)
    {
        Py_INCREF(res);
    }

done:
    if (top_level) {
        rebuild_memo_clear();
    }
    return res;
}

PyObject *
tps_rebuild_with_identity(TpShare_Record *rec, tps_identity *id)
{
    /* Saved and restored rather than cleared: a rebuild hook may receive
     * from another channel while this one rebuilds. */
    tps_identity *saved = rctx.identity;
    rctx.identity = id;
    PyObject *res = tps_rebuild(rec);
    rctx.identity = saved;
    return res;
}

/* ---------------------------------------------------------------------
 * Holding and releasing.
 */

void
tps_record_incref(TpShare_Record *rec)
{
    assert(atomic_load_explicit(&rec->refcnt, memory_order_relaxed) > 0);
    atomic_fetch_add_explicit(&rec->refcnt, 1, memory_order_relaxed);
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
    if (rec->tracker != NULL) {
        tps_tracker_fire(rec->tracker);
        tps_tracker_decref(rec->tracker);
    }
    if (st != NULL) {
        tps_interp_export_add(st, -1);
        tps_interp_decref(st);
    }
    tps_entry_decref(entry);
    record_dealloc(rec);
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

/* A reference to `rec` is about to go into a queue. */
void
tps_record_queue_enter(TpShare_Record *rec)
{
    if (rec->flags & TPS_REC_BOUND) {
        tps_interp_queued_add(rec->ownerst, 1);
    }
}

void
tps_record_queue_leave(TpShare_Record *rec)
{
    if (rec->flags & TPS_REC_BOUND) {
        tps_interp_queued_add(rec->ownerst, -1);
    }
}

void
tps_record_queue_release(TpShare_Record *rec)
{
    if (!(rec->flags & TPS_REC_BOUND)) {
        tps_record_release(rec);
        return;
    }
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

/* ---------------------------------------------------------------------
 * Neutral copies at the owner's exit.
 */

/* Set while tps_record_neutral_copy() shares: hooks that could keep a
 * reference to the sender's object copy instead. */
static TPS_TLS int must_copy;

int
tps_share_must_copy(void)
{
    return must_copy;
}

TpShare_Record *
tps_record_neutral_copy(TpShare_Record *rec)
{
    assert(tps_thread_state() != NULL);
    assert(rec->owner == tps_current_interp_id());
    assert(rec->flags & TPS_REC_BOUND);
    assert(sctx.depth == 0 && rctx.depth == 0);

    PyObject *exc = PyErr_GetRaisedException();
    PyObject *value = NULL;
    tps_entry *entry = NULL;
    TpShare_Record *copy = NULL;

    if (rec->entry == tps_pickle_entry) {
        /* The pickle's bytes: copied as they are, not unpickled here. */
        if (rec->data.obj != NULL && PyBytes_CheckExact(rec->data.obj)) {
            value = Py_NewRef(rec->data.obj);
            entry = tps_pickle_entry;
        }
    }
    else if (rec->entry->hooks.flags & TPSHARE_IMMUTABLE) {
        /* Rebuilt here and shared again with every hook copying: the
         * value cannot have changed since it was sent. */
        value = tps_rebuild(rec);
    }
    if (value != NULL) {
        must_copy = 1;
        copy = share_entry(value, entry, rec->owner, NULL);
        must_copy = 0;
        Py_DECREF(value);
    }
    if (copy != NULL && (copy->flags & TPS_REC_BOUND)) {
        /* Something in it is still the owner's (a view of its memory). */
        tps_record_release(copy);
        copy = NULL;
    }
    if (copy != NULL) {
        /* The same object as before for a receiver that tracks identity. */
        copy->serial = rec->serial;
        copy->origin = rec->origin;
    }
    PyErr_Clear();
    PyErr_SetRaisedException(exc);
    return copy;
}

/* ---------------------------------------------------------------------
 * Checks.
 */

int
tps_is_shareable(PyObject *obj)
{
    /* Nothing pending: the exception cleared below is the share's. */
    assert(!PyErr_Occurred());
    TpShare_Record *rec = tps_share(obj);
    if (rec != NULL) {
        tps_record_release(rec);
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_MemoryError)
        || !PyErr_ExceptionMatches(PyExc_Exception))
    {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

void
tps_records_atfork(tps_fork_phase phase)
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
