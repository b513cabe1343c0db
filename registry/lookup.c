/* lookup.c - finding a type's registration: the per-interpreter lookup
 * caches and the fast table of built-in types, in front of the
 * process-wide table of registry.c (registry_layout.h).
 *
 * Readers do not share a lock: each interpreter keeps its own lookup
 * cache (guarded by its own GIL) that is flushed when it sees a new
 * generation of the table, so with interpreters running in parallel a
 * steady-state lookup is one atomic load and one probe of a private
 * table.  Misses, MRO walks and lookups by name go to the shared table
 * under the mutex and are cached.
 *
 * A cached answer names its type by address, and an address outlives the
 * type: an unregistered type (a subclass found on the MRO, a buffer
 * exporter, a type found not shareable) can die and a new type can be
 * allocated where it was.  So an answer is kept with the type's identity
 * (see type_identity()) and only used while that identity is unchanged.
 */
#include "registry_layout.h"
#include "owner.h"
#include "ptrmap.h"

#include <string.h>

/* One cached answer: what `type` resolves to in the cache's interpreter,
 * valid while type_identity(type) == version. */
typedef struct {
    PyTypeObject *type;      /* NULL: a free slot */
    tps_entry *entry;        /* held; NULL: not shareable */
    unsigned int version;
} answer;

/* The answers are a fixed set-associative table: a lookup hashes the
 * type to a set and compares at most CACHE_WAYS slots; a full set evicts
 * one answer.  Its size is fixed, so answers for types that died (their
 * slots are only reused, never matched again) cannot pile up. */
#define CACHE_SETS 64
#define CACHE_WAYS 4

struct tps_lookup_cache {
    tps_lookup_cache *next;  /* in tps_registry.caches */
    int64_t interp;
    uint64_t generation;
    answer bytype[CACHE_SETS][CACHE_WAYS];
    int nanswers;            /* occupied slots of bytype */
    unsigned int victim;     /* round-robin way to evict in a full set */
    /* sent entry -> local entry; both hold a ref. */
    ptrmap byentry;
    /* A held entry returned but not cached (see tps_registry_find). */
    tps_entry *spare;
};

typedef tps_lookup_cache cache;

/* The current thread's last cache, to skip the search in tps_registry.caches
 * while a thread stays in one interpreter.  The pointer is only used when
 * the interpreter ID matches, and IDs are never reused. */
static TPS_TLS struct {
    int64_t interp;
    cache *c;
} tls_cache = {-1, NULL};

/* What tells `type` (borrowed, of the current interpreter or static)
 * apart from any other type that is or was at its address, as of now:
 *
 * - 0 for a static type.  It lives for the process at a fixed address,
 *   and it is immutable (PyType_Ready sets Py_TPFLAGS_IMMUTABLETYPE on
 *   every static type), so an answer for it stays true until the
 *   registry changes.  Nothing of it is written here: a static type is
 *   shared by every interpreter.
 * - the version tag of a heap type.  A heap type can die and a new one
 *   take its address, and it can be changed (its bases, its MRO, a
 *   __buffer__ added or removed, also on a base); CPython then gives it
 *   another tag and never gives a tag to two types, so the tag changes
 *   with everything an answer depends on besides the registry.  0 when
 *   the type has no valid tag: its answer is not cached.
 *
 * Computed on a miss; a hit (tps_registry_find) reads nothing of a
 * static type and one field of a heap type. */
static inline unsigned int
type_identity(PyTypeObject *type)
{
    if (!PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE)) {
        assert(!PyType_HasFeature(type, Py_TPFLAGS_READY)
               || PyType_HasFeature(type, Py_TPFLAGS_IMMUTABLETYPE));
        return 0;
    }
    return tps_type_version(type);
}

static inline answer *
cache_set(cache *c, const PyTypeObject *type)
{
    return c->bytype[hash_ptr(type) & (CACHE_SETS - 1)];
}

/* Park the held `e` (or NULL) in c->spare, letting go of the one there:
 * an answer returned without being cached stays valid until the next
 * call, as a cached one does. */
static void
cache_park(cache *c, tps_entry *e)
{
    if (c->spare != NULL) {
        tps_entry_decref(c->spare);
    }
    c->spare = e;
}

/* Cache the held `e` (or NULL: not shareable) as the answer for `type`
 * with identity `version`: in the slot of an older answer for the same
 * address, else a free slot, else the set's round-robin victim.  The
 * cache takes over the reference. */
static void
cache_store(cache *c, PyTypeObject *type, unsigned int version, tps_entry *e)
{
    answer *set = cache_set(c, type);
    answer *slot = NULL;

    for (int w = 0; w < CACHE_WAYS; w++) {
        if (set[w].type == type) {
            slot = &set[w];
            break;
        }
        if (slot == NULL && set[w].type == NULL) {
            slot = &set[w];
        }
    }
    if (slot == NULL) {
        slot = &set[c->victim++ % CACHE_WAYS];
    }
    if (slot->type == NULL) {
        c->nanswers++;
    }
    else if (slot->entry != NULL) {
        tps_entry_decref(slot->entry);
    }
    slot->type = type;
    slot->entry = e;
    slot->version = version;
}

static void
cache_flush(cache *c)
{
    if (c->nanswers > 0) {
        for (int i = 0; i < CACHE_SETS; i++) {
            for (int w = 0; w < CACHE_WAYS; w++) {
                if (c->bytype[i][w].entry != NULL) {
                    tps_entry_decref(c->bytype[i][w].entry);
                }
            }
        }
        memset(c->bytype, 0, sizeof(c->bytype));
        c->nanswers = 0;
    }
    PTRMAP_FOREACH(&c->byentry, s) {
        tps_entry_decref(s->key);
        tps_entry_decref(s->value);
    }
    ptrmap_clear(&c->byentry);
    cache_park(c, NULL);
}

/* The current interpreter's cache, flushed if stale.  NULL with
 * MemoryError.  Needs the GIL. */
static cache *
current_cache(void)
{
    int64_t id = tps_current_interp_id();
    cache *c = tls_cache.interp == id ? tls_cache.c : NULL;

    assert(tps_thread_state() != NULL);
    if (c == NULL) {
        tps_registry_lock();
        for (c = tps_registry.caches; c != NULL; c = c->next) {
            if (c->interp == id) {
                break;
            }
        }
        if (c == NULL) {
            c = PyMem_RawCalloc(1, sizeof(cache));
            if (c != NULL) {
                c->interp = id;
                c->generation = atomic_load(&tps_registry.generation);
                c->next = tps_registry.caches;
                tps_registry.caches = c;
            }
        }
        tps_registry_unlock();
        if (c == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        tls_cache.interp = id;
        tls_cache.c = c;
    }
    uint64_t gen = atomic_load_explicit(&tps_registry.generation,
                                        memory_order_acquire);
    if (c->generation != gen) {
        cache_flush(c);
        c->generation = gen;
    }
    return c;
}

/* The built-in registrations, checked by pointer before any table: most
 * values shared are of these types.  A slot's type is cleared for good
 * (under the registry mutex) when its type's registration changes
 * (replace or unregister), sending that type back to the general path;
 * readers in other interpreters load it at the same time, hence atomic.
 * A slot's entry is written once, before the registry's set-up ends
 * (which every reader waits for under a mutex), and never changes: a
 * reader that loads the old type an instant after it was cleared still
 * gets a valid (immortal) entry, so relaxed loads are enough. */
#define NFAST 8
static struct {
    _Atomic(PyTypeObject *) type;
    tps_entry *entry;
} fast[NFAST];

tps_entry *
tps_registry_fast(PyTypeObject *type)
{
    /* Unrolled, as the compiler does by itself for plain loads but not
     * for atomic ones: a loop of atomic loads costs several times the
     * instructions of the unrolled checks. */
#if defined(__GNUC__)
#pragma GCC unroll 8
#endif
    for (int i = 0; i < NFAST; i++) {
        if (atomic_load_explicit(&fast[i].type, memory_order_relaxed)
            == type)
        {
            return fast[i].entry;
        }
    }
    return NULL;
}

void
tps_registry_fast_forget_locked(PyTypeObject *type)
{
    assert(tps_registry_locked());
    for (int i = 0; i < NFAST; i++) {
        if (atomic_load_explicit(&fast[i].type, memory_order_relaxed)
            == type)
        {
            atomic_store_explicit(&fast[i].type, NULL,
                                  memory_order_relaxed);
        }
    }
}

void
tps_registry_fast_fill_locked(void)
{
    assert(tps_registry_locked());
    int i = 0;
    PTRMAP_FOREACH(&tps_registry.bytype, s) {
        if (i == NFAST) {
            break;
        }
        tps_entry *e = s->value;
        fast[i].entry = e;
        atomic_store_explicit(&fast[i].type, e->type, memory_order_relaxed);
        i++;
    }
}

/* The entry for `type` seen from `interp`, with the registry mutex held:
 * exact match, then subclass-accepting bases on the MRO, then the buffer
 * fallback.  Borrowed, or NULL. */
static tps_entry *
resolve_locked(PyTypeObject *type, int64_t interp)
{
    assert(tps_registry_locked());
    int found;
    tps_entry *e = ptrmap_get(&tps_registry.bytype, type, &found);
    if (found && tps_entry_visible(e, interp)) {
        return e;
    }
    PyObject *mro = type->tp_mro;
    if (mro != NULL && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(mro); i++) {
            PyObject *base = PyTuple_GET_ITEM(mro, i);
            e = ptrmap_get(&tps_registry.bytype, base, &found);
            if (found && tps_entry_visible(e, interp)) {
                if (e->hooks.flags & TPSHARE_SUBCLASSES) {
                    return e;
                }
                /* A registered base that refuses subclasses ends the
                 * walk: its subclasses must register themselves. */
                return NULL;
            }
        }
    }
    if (type->tp_as_buffer != NULL
        && type->tp_as_buffer->bf_getbuffer != NULL)
    {
        return tps_buffer_entry;
    }
    return NULL;
}

tps_entry *
tps_registry_find(PyTypeObject *type)
{
    cache *c = current_cache();
    if (c == NULL) {
        return NULL;
    }
    answer *set = cache_set(c, type);
    for (int w = 0; w < CACHE_WAYS; w++) {
        if (set[w].type != type) {
            continue;
        }
        /* Version 0 is stored for static types only, and a static type
         * keeps its address for good: the slot is this very type.  Any
         * other version is a heap type's tag, which no other type ever
         * gets; a heap type without a valid tag (0) matches nothing.  (A
         * type has at most one slot.) */
        if (set[w].version == 0
            || set[w].version == tps_type_version(type))
        {
            return set[w].entry;
        }
        break;
    }

    unsigned int version = type_identity(type);
    int heap = PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE);
    if (heap && version == 0) {
        /* CPython tags types lazily (when it first looks an attribute up
         * on them after a change); ask for one now so the answer can be
         * cached.  It touches only this interpreter's type and, at worst,
         * tags its bases as CPython's own attribute lookups do. */
        if (PyUnstable_Type_AssignVersionTag(type)) {
            version = tps_type_version(type);
        }
    }
    /* Nothing between reading the identity and resolving can change the
     * type: this thread holds its interpreter's GIL and runs no Python
     * code here. */
    tps_registry_lock();
    tps_entry *e = resolve_locked(type, c->interp);
    if (e != NULL) {
        /* The cache's reference keeps `e` alive until this interpreter
         * next enters the registry, even if a writer removes it now (the
         * stale cache is flushed on that next entry). */
        tps_entry_incref(e);
    }
    tps_registry_unlock();
    if (heap && version == 0) {
        /* No tag to tell this type from a later one at its address (its
         * tags ran out): answer without caching. */
        cache_park(c, e);
    }
    else {
        cache_store(c, type, version, e);
    }
    return e;
}

tps_entry *
tps_registry_find_for_rebuild(tps_entry *sent)
{
    /* A static type's entry keeps its type for the process.  A heap
     * type's entry is only changed under its own interpreter's GIL, which
     * the caller holds when id == sent->interp. */
    if (sent->interp < 0) {
        return sent;
    }
    int64_t id = tps_current_interp_id();
    if (sent->interp == id && sent->type != NULL) {
        return sent;
    }
    cache *c = current_cache();
    if (c == NULL) {
        return NULL;
    }
    int found;
    tps_entry *e = ptrmap_get(&c->byentry, sent, &found);
    if (found) {
        return e;
    }
    e = NULL;
    tps_registry_lock();
    PTRMAP_FOREACH(&tps_registry.bytype, s) {
        tps_entry *cand = s->value;
        if (tps_entry_visible(cand, id)
            && strcmp(cand->name, sent->name) == 0)
        {
            e = cand;
            break;
        }
    }
    int cached = 0;
    if (e != NULL) {
        /* Held by the cache, or else by c->spare: a static type's entry
         * can be unregistered by another interpreter once the mutex is
         * released. */
        tps_entry_incref(e);
        if (c->generation == atomic_load(&tps_registry.generation)
            && ptrmap_set(&c->byentry, sent, e) == 0)
        {
            tps_entry_incref(sent);
            cached = 1;
        }
    }
    tps_registry_unlock();
    if (e != NULL && !cached) {
        cache_park(c, e);
    }
    if (e == NULL) {
        PyErr_Format(PyExc_LookupError,
                     "cannot rebuild a '%s': no type is registered under "
                     "that name in interpreter %lld (import the module "
                     "that registers it first)",
                     sent->name, (long long)id);
    }
    return e;
}

/* ---------------------------------------------------------------------
 * Per-interpreter teardown.
 */

tps_lookup_cache *
tps_registry_cache_unlink_locked(int64_t interp)
{
    assert(tps_registry_locked());
    for (cache **pc = &tps_registry.caches; *pc != NULL; pc = &(*pc)->next) {
        if ((*pc)->interp == interp) {
            cache *gone = *pc;
            *pc = gone->next;
            return gone;
        }
    }
    return NULL;
}

void
tps_registry_cache_drop(tps_lookup_cache *gone, int64_t interp)
{
    /* Runs in the exiting interpreter, the only one that uses its
     * cache. */
    assert(interp == tps_current_interp_id());
    if (tls_cache.interp == interp) {
        tls_cache.interp = -1;
        tls_cache.c = NULL;
    }
    if (gone != NULL) {
        cache_flush(gone);
        PyMem_RawFree(gone);
    }
}
