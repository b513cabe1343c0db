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
 * Release.  When the last holder lets go, a neutral record is freed where
 * it is; an owner-bound one is freed at once if the current interpreter
 * is its owner, and otherwise queued on the owner's release list
 * (interp.c), which never fails and never loses a request.
 */
#include "tpshare_internal.h"
#include "ptrmap.h"

#include <stddef.h>
#include <string.h>

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
    int any_mutable;     /* ... or may change (not TPSHARE_IMMUTABLE) */
    int64_t owner;       /* the sharing interpreter, set at top level */
    frame *top;
    ptrmap memo;         /* obj -> record (holds a record reference) */
} share_ctx;

typedef struct {
    int depth;
    ptrmap memo;         /* record -> object (holds a new reference) */
} rebuild_ctx;

static TPS_TLS share_ctx sctx;
static TPS_TLS rebuild_ctx rctx;

/* Nesting deeper than this raises RecursionError (C stack safety). */
#define MAX_DEPTH 2000

/* Freed records are kept for reuse: most live for microseconds, and
 * malloc/free was the largest part of their cost.  So are small payload
 * blocks (the copies of short str and bytes): glibc's malloc is slow when
 * one thread frees what another allocated, which is what a channel does.
 * Each thread keeps a free list per kind of block; a channel's receiver
 * frees what its sender allocates, so full lists move, a chunk at a time,
 * through a process-wide pool to the threads whose lists run dry (one
 * mutex operation per CHUNK blocks).  A free block is linked through its
 * first word. */
#define CHUNK 256
#define FREELIST_MAX (2 * CHUNK)
#define POOL_CHUNKS 64

typedef struct block {
    struct block *next;
} block;

typedef struct {
    block *head;
    int count;
} block_list;

typedef struct {
    pthread_mutex_t mutex;
    size_t size;                   /* of each block */
    block *chunks[POOL_CHUNKS];    /* each CHUNK blocks, linked */
    int n;
} block_pool;

/* Small payload blocks come in two sizes, so that a 64-byte copy takes
 * one cache line, not two. */
#define SMALL_LOW 64

static TPS_TLS block_list record_list, small_lists[2];
static block_pool record_pool = {PTHREAD_MUTEX_INITIALIZER,
                                 sizeof(TpShare_Record)};
static block_pool small_pools[2] = {
    {PTHREAD_MUTEX_INITIALIZER, SMALL_LOW},
    {PTHREAD_MUTEX_INITIALIZER, TPS_SMALL_MAX},
};

/* Move CHUNK blocks from the list to the pool, or free them when the
 * pool is full. */
static void
blocks_spill(block_list *l, block_pool *p)
{
    block *chunk = l->head, *last = chunk;
    for (int i = 1; i < CHUNK; i++) {
        last = last->next;
    }
    l->head = last->next;
    l->count -= CHUNK;
    last->next = NULL;

    pthread_mutex_lock(&p->mutex);
    int stored = p->n < POOL_CHUNKS;
    if (stored) {
        p->chunks[p->n++] = chunk;
    }
    pthread_mutex_unlock(&p->mutex);
    while (!stored && chunk != NULL) {
        block *next = chunk->next;
        PyMem_RawFree(chunk);
        chunk = next;
    }
}

/* A block of p->size bytes (contents undefined), or NULL without an
 * exception when memory is exhausted. */
static void *
block_alloc(block_list *l, block_pool *p)
{
    if (l->head == NULL) {
        pthread_mutex_lock(&p->mutex);
        if (p->n > 0) {
            l->head = p->chunks[--p->n];
            l->count = CHUNK;
        }
        pthread_mutex_unlock(&p->mutex);
    }
    block *b = l->head;
    if (b == NULL) {
        return PyMem_RawMalloc(p->size);
    }
    block *next = b->next;
    l->head = next;
    l->count--;
    if (next != NULL) {
        /* Recycled blocks were last written by another thread (a
         * channel's receiver frees what its sender allocates): fetch the
         * next one's lines while this one is filled. */
        tps_prefetch_for_write(next, p->size);
    }
    return b;
}

static void
block_free(block_list *l, block_pool *p, void *ptr)
{
    block *b = ptr;
    b->next = l->head;
    l->head = b;
    if (++l->count >= FREELIST_MAX) {
        blocks_spill(l, p);
    }
}

void *
tps_small_alloc(TpShare_Data *data, Py_ssize_t n)
{
    if (n > TPS_SMALL_MAX) {
        return NULL;
    }
    int big = n > SMALL_LOW;
    void *ptr = block_alloc(&small_lists[big], &small_pools[big]);
    if (ptr != NULL) {
        TpShare_Record *rec = (TpShare_Record *)(
            (char *)data - offsetof(TpShare_Record, data));
        rec->flags |= big ? TPS_REC_SMALL | TPS_REC_SMALL_BIG
                          : TPS_REC_SMALL;
    }
    return ptr;
}

/* Memos keep their table between messages unless it grew large. */
#define MEMO_KEEP_SLOTS 256

static void
memo_reset(ptrmap *m)
{
    if (m->slots != NULL && m->mask + 1 <= MEMO_KEEP_SLOTS) {
        memset(m->slots, 0, (m->mask + 1) * sizeof(ptrslot));
        m->used = m->filled = 0;
    }
    else {
        ptrmap_clear(m);
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
record_alloc(tps_entry *entry, int64_t owner)
{
    TpShare_Record *rec = block_alloc(&record_list, &record_pool);
    if (rec == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *rec = (TpShare_Record){0};
    atomic_init(&rec->refcnt, 1);
    rec->owner = owner;
    rec->entry = entry;
    tps_entry_incref(entry);
    return rec;
}

static void
record_dealloc(TpShare_Record *rec)
{
    if (rec->flags & TPS_REC_SMALL) {
        int big = (rec->flags & TPS_REC_SMALL_BIG) != 0;
        block_free(&small_lists[big], &small_pools[big], rec->data.ptr);
    }
    block_free(&record_list, &record_pool, rec);
}

/* Free a record that was never shared (its hook failed): no free hook. */
static void
record_discard(TpShare_Record *rec)
{
    tps_entry_decref(rec->entry);
    record_dealloc(rec);
}

static TpShare_Record *share_entry(PyObject *obj, tps_entry *entry,
                                   int64_t owner);

TpShare_Record *
tps_share(PyObject *obj)
{
    return share_entry(obj, NULL, -1);
}

TpShare_Record *
tps_share_with(PyObject *obj, tps_entry *entry)
{
    return share_entry(obj, entry, -1);
}

TpShare_Record *
tps_share_in(PyObject *obj, int64_t owner)
{
    return share_entry(obj, NULL, owner);
}

/* Share `obj` with `entry`, or with the registry's entry for its type when
 * `entry` is NULL.  `owner` is the current interpreter's ID when the
 * caller knows it, else -1. */
static TpShare_Record *
share_entry(PyObject *obj, tps_entry *entry, int64_t owner)
{
    int top_level = sctx.depth == 0;
    TpShare_Record *rec = NULL;

    if (obj == NULL) {
        PyErr_SetString(PyExc_SystemError, "Share() of NULL");
        return NULL;
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
    rec = record_alloc(entry, sctx.owner);
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
    int mutable = sctx.any_mutable || bound
                  || !(entry->hooks.flags & TPSHARE_IMMUTABLE);
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
    if (memoize && ptrmap_set(&sctx.memo, obj, rec) == 0) {
        /* Without memory for the memo the object is simply shared again
         * if met again: identity is lost, nothing else. */
        tps_record_incref(rec);
    }

done:
    if (top_level) {
        share_memo_clear();
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
    if (!top_level && (rec->flags & TPS_REC_DUP)
        && ptrmap_set(&rctx.memo, rec, res) == 0)
    {
        Py_INCREF(res);
    }

done:
    if (top_level) {
        rebuild_memo_clear();
    }
    return res;
}

/* ---------------------------------------------------------------------
 * Holding and releasing.
 */

void
tps_record_incref(TpShare_Record *rec)
{
    atomic_fetch_add_explicit(&rec->refcnt, 1, memory_order_relaxed);
}

void
tps_record_free(TpShare_Record *rec)
{
    tps_entry *entry = rec->entry;
    tps_interp *st = (rec->flags & TPS_REC_BOUND) ? rec->ownerst : NULL;

    if (rec->flags & TPS_REC_SMALL) {
        /* A block of ours (tps_small_alloc), freed with the record: the
         * hook sees a copy of the data without it.  (A copy, so that this
         * thread does not write the record's data line: the sender that
         * reuses the record next finds it clean.) */
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
    if (atomic_fetch_sub_explicit(&rec->refcnt, 1, memory_order_acq_rel)
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
 * Checks.
 */

int
tps_is_shareable(PyObject *obj)
{
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
