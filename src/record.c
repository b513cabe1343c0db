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
 * one object twice.  The context also tracks the position
 * of the item being shared, for error messages, and whether anything
 * nested is owner-bound (a record is owner-bound when its own data or any
 * nested record is: it must then be freed in its owner).
 *
 * Identity across messages.  A channel with identity on passes its
 * interpreter's identity table (identity.c) to the share and the rebuild
 * of each message; then every record of a value that can never change,
 * at any depth, carries the serial of the object it was made from, and
 * the receiver looks each one up before rebuilding it: an object is the
 * same object wherever it sits in the messages it travels in.
 *
 * Release (record_release.c).  When the last holder lets go, a neutral
 * record is freed where it is; an owner-bound one is freed at once if the
 * current interpreter is its owner, and otherwise queued on the owner's
 * release list (owner.c), which never fails and never loses a request.
 */
#include "record.h"
#include "blocks.h"
#include "identity.h"
#include "owner.h"
#include "ptrmap.h"
#include "registry.h"

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

/* Set while tps_record_neutral_copy() shares: hooks that could keep a
 * reference to the sender's object copy instead. */
static TPS_TLS int must_copy;

/* Nesting deeper than this raises RecursionError (C stack safety). */
#define MAX_DEPTH 2000

/* ---------------------------------------------------------------------
 * Record memory.
 *
 * A record takes a two-line block (blocks.h).  A record's block may have
 * one more line after the record for a payload of up to TPS_LINE bytes
 * (the copy of a 64-byte bytes or str), so the commonest small message is
 * one block of three adjacent lines.  Copies of up to TPS_SMALL_MAX bytes
 * take a two-line block of their own, larger ones up to TPS_COPY_MAX a
 * block of their copy class.
 */
#define REC_SPAN (2 * TPS_LINE)     /* the record itself */
#define TAIL_MAX TPS_LINE           /* the payload line after it */
_Static_assert(sizeof(TpShare_Record) <= REC_SPAN, "record fits 2 lines");
_Static_assert(TPS_BLOCK_SIZE(TPS_BLOCK_TWO) == REC_SPAN,
               "a record takes a two-line block");
_Static_assert(TPS_BLOCK_SIZE(TPS_BLOCK_THREE) == REC_SPAN + TAIL_MAX,
               "a record with its tail takes a three-line block");
_Static_assert(TPS_SMALL_MAX == REC_SPAN, "small blocks are two lines");
_Static_assert(TPS_BLOCK_SIZE(TPS_BLOCK_SHORT) == TPS_REC_SHORT_SIZE,
               "a short record takes a small block of its size");
_Static_assert(TPS_REC_SHORT_SIZE % 16 == 0
               && offsetof(TpShare_Record, data) % 8 == 0,
               "a short record keeps its fields aligned");
_Static_assert(TPS_BLOCK_SMALL_FIRST <= 16,
               "a record's block kind (never a small one) fits its bits");

void *
tps_small_alloc(TpShare_Data *data, size_t n)
{
    TpShare_Record *rec = TPS_RECORD_OF(data);
    void *ptr;
    /* The record frees one block, the one at data->ptr: a second call, or
     * one after the hook set ptr itself, gets none. */
    if (data->ptr != NULL || n > TPS_COPY_MAX) {
        return NULL;
    }
    if (n <= TAIL_MAX && (rec->flags & TPS_REC_LONG)) {
        rec->flags |= TPS_REC_TAIL;
        ptr = (char *)rec + REC_SPAN;
    }
    else {
        int kind = n <= TPS_SMALL_MAX ? TPS_BLOCK_TWO
                                      : tps_block_copy_kind(n);
        ptr = tps_block_alloc(kind);
        if (ptr == NULL) {
            return NULL;
        }
        rec->flags |= TPS_REC_SMALL | ((uint32_t)kind << TPS_REC_KIND_SHIFT);
    }
    data->ptr = ptr;
    return ptr;
}

/* The block a record for `obj` (borrowed) takes.  Three lines when
 * sharing it copies 17 to 64 bytes (a str or bytes the built-in handlers
 * copy): the line after the record holds them.  A short record (96
 * bytes) when the handlers share the object itself (a str or bytes of
 * tps_bytes_share_min bytes or more, no copy forced) and the message
 * needs no serials (no identity).  Two lines otherwise.  Only a kind:
 * whatever the hook then does works with any of the three. */
static inline int
record_kind_for(PyObject *obj)
{
    Py_ssize_t n;
    if (PyBytes_CheckExact(obj)) {
        n = PyBytes_GET_SIZE(obj);
    }
    else if (PyUnicode_CheckExact(obj)) {
        n = PyUnicode_GET_LENGTH(obj) * PyUnicode_KIND(obj);
    }
    else {
        return TPS_BLOCK_TWO;
    }
    if (n > (Py_ssize_t)sizeof(((TpShare_Data *)0)->inline_data)
        && n <= TAIL_MAX)
    {
        return TPS_BLOCK_THREE;
    }
    if (n >= atomic_load_explicit(&tps_bytes_share_min, memory_order_relaxed)
        && !must_copy && sctx.identity == NULL)
    {
        return TPS_BLOCK_SHORT;
    }
    return TPS_BLOCK_TWO;
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

static TpShare_Record *share_entry(PyObject *obj, tps_entry *entry,
                                   int64_t owner, tps_identity *id);

/* The index goes into the running hook's frame, read only if the share
 * fails (the path in the error). */
TpShare_Record *
tps_share_item(PyObject *obj, Py_ssize_t index)
{
    if (sctx.top != NULL) {
        sctx.top->index = index;
    }
    return share_entry(obj, NULL, -1, NULL);
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

/* A hook of registration `name` reported success with an exception set:
 * replace it with SystemError naming the hook (`which`), the exception
 * it left as the cause. */
static void
hook_left_an_exception(const char *which, const char *name)
{
    assert(PyErr_Occurred());
    PyObject *exc = PyErr_GetRaisedException();
    PyErr_Format(PyExc_SystemError,
                 "%s hook of '%s' succeeded with an exception set",
                 which, name);
    PyObject *cur = PyErr_GetRaisedException();
    PyException_SetCause(cur, exc);      /* steals exc */
    PyErr_SetRaisedException(cur);       /* steals cur */
}

/* A record in a block of `kind` (TPS_BLOCK_TWO, _THREE or _SHORT). */
static TpShare_Record *
record_alloc(tps_entry *entry, int64_t owner, int kind)
{
    TpShare_Record *rec = tps_block_alloc(kind);
    if (rec == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (kind == TPS_BLOCK_SHORT) {
        memset(rec, 0, TPS_REC_SHORT_SIZE);
        rec->flags = TPS_REC_SHORT;
    }
    else {
        *rec = (TpShare_Record){0};
        rec->flags = kind == TPS_BLOCK_THREE ? TPS_REC_LONG : 0;
    }
    atomic_init(&rec->refcnt, 1);
    rec->owner = owner;
    rec->entry = entry;
    tps_entry_incref(entry);
    return rec;
}

/* Free a record that was never shared (its hook failed): no free hook. */
static void
record_discard(TpShare_Record *rec)
{
    tps_entry_decref(rec->entry);
    tps_record_dealloc(rec);
}

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
        /* A message starts with a clean context; `finally` cleans it up. */
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
        goto finally;
    }
    if (sctx.depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum nesting depth exceeded while sharing");
        goto finally;
    }
    if (top_level) {
        sctx.owner = owner >= 0 ? owner : tps_current_interp_id();
    }
    rec = record_alloc(entry, sctx.owner,
                       looked_up ? record_kind_for(obj) : TPS_BLOCK_TWO);
    if (rec == NULL) {
        goto finally;
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
            tps_record_free(rec);      /* with no exception set */
            PyErr_SetRaisedException(exc);
            hook_left_an_exception("share", entry->name);
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
        goto finally;
    }
    if (bound) {
        tps_interp *st = tps_interp_current();
        if (st == NULL) {
            tps_record_free(rec);
            rec = NULL;
            goto finally;
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
        goto finally;
    }
    if (memoize && memo_set(&sctx.memo, obj, rec) == 0) {
        /* Without memory for the memo the object is simply shared again
         * if met again: identity is lost, nothing else. */
        tps_record_incref(rec);
    }

finally:
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
    if (rctx.identity != NULL && tps_record_serial(rec) != 0) {
        /* Sent before (in this message or an earlier one, at any depth):
         * the object rebuilt then, while this interpreter holds it. */
        res = tps_identity_lookup(rctx.identity, rec);
        if (res != NULL) {
            goto finally;
        }
    }
    tps_entry *local = tps_registry_find_for_rebuild(rec->entry);
    if (local == NULL) {
        goto finally;
    }
    if (rctx.depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum nesting depth exceeded while rebuilding");
        goto finally;
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
        goto finally;
    }
    if (!local->immortal && PyErr_Occurred()) {
        Py_CLEAR(res);
        hook_left_an_exception("rebuild", local->name);
        goto finally;
    }
    if (!(local->hooks.flags & TPSHARE_ANY_RESULT) && local->type != NULL
        && !PyObject_TypeCheck(res, local->type))
    {
        PyErr_Format(PyExc_TypeError,
                     "rebuild hook of '%s' returned a '%.200s', not a "
                     "'%.200s'", local->name, Py_TYPE(res)->tp_name,
                     local->type->tp_name);
        Py_CLEAR(res);
        goto finally;
    }
    if (rctx.identity != NULL && tps_record_serial(rec) != 0) {
        tps_identity_remember(rctx.identity, rec, res);
    }
    if (!top_level && (rec->flags & TPS_REC_DUP)
        && memo_set(&rctx.memo, rec, res) == 0)
    {
        Py_INCREF(res);
    }

finally:
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
 * Neutral copies at the owner's exit.
 */

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
    if (copy != NULL && tps_record_serial(rec) != 0) {
        /* The same object as before for a receiver that tracks identity
         * (the copy is not short: it copies). */
        assert(!(copy->flags & TPS_REC_SHORT));
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
