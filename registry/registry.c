/* registry.c - the process-wide type registry.
 *
 * Maps a type to the hooks that share its instances.  Static types are
 * registered once for the process; heap types exist once per interpreter,
 * so their registrations are visible only in the interpreter that made
 * them and vanish with the type (a weakref callback removes them before
 * the type's memory can be reused).
 *
 * Why this state is process-wide: a record made in one interpreter is
 * rebuilt in another, so both must see the same registrations.  It holds
 * no PyObject*: types are keys only (never referenced or dereferenced
 * outside the interpreter that owns them) and entries are raw memory.
 *
 * Concurrency: writers (register, unregister) take `registry.mutex` and
 * bump `registry.generation`.  Readers do not share a lock: each
 * interpreter keeps its own lookup cache (guarded by its own GIL) that is
 * flushed when it sees a new generation, so with interpreters running in
 * parallel a steady-state lookup is one atomic load and one probe of a
 * private table.  Misses, MRO walks and lookups by name go to the shared
 * table under the mutex and are cached.
 *
 * A cached answer names its type by address, and an address outlives the
 * type: an unregistered type (a subclass found on the MRO, a buffer
 * exporter, a type found not shareable) can die and a new type can be
 * allocated where it was.  So an answer is kept with the type's identity
 * (see type_identity()) and only used while that identity is unchanged.
 */
#include "registry.h"
#include "fork.h"
#include "owner.h"
#include "ptrmap.h"
#include "record.h"

#include <string.h>

/* ---------------------------------------------------------------------
 * The process-wide table and the per-interpreter caches.
 */

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

typedef struct cache {
    struct cache *next;      /* in registry.caches */
    int64_t interp;
    uint64_t generation;
    answer bytype[CACHE_SETS][CACHE_WAYS];
    int nanswers;            /* occupied slots of bytype */
    unsigned int victim;     /* round-robin way to evict in a full set */
    /* sent entry -> local entry; both hold a ref. */
    ptrmap byentry;
    /* A held entry returned but not cached (see tps_registry_find). */
    tps_entry *spare;
} cache;

static struct {
    pthread_mutex_t mutex;
    int initialized;
    atomic_uint_fast64_t generation;
    /* type -> entry (holds a ref), every live registration. */
    ptrmap bytype;
    /* One lookup cache per interpreter that used the registry. */
    cache *caches;
} registry = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
};

/* Whether the calling thread holds registry.mutex: asserted by the
 * functions that need it (debug builds). */
#ifndef NDEBUG
static TPS_TLS int tls_holds_registry;
#define REGISTRY_LOCKED() (tls_holds_registry != 0)
#endif

static void
registry_lock(void)
{
    pthread_mutex_lock(&registry.mutex);
#ifndef NDEBUG
    assert(!tls_holds_registry);
    tls_holds_registry = 1;
#endif
}

static void
registry_unlock(void)
{
#ifndef NDEBUG
    assert(tls_holds_registry);
    tls_holds_registry = 0;
#endif
    pthread_mutex_unlock(&registry.mutex);
}

/* The current thread's last cache, to skip the search in registry.caches
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
        registry_lock();
        for (c = registry.caches; c != NULL; c = c->next) {
            if (c->interp == id) {
                break;
            }
        }
        if (c == NULL) {
            c = PyMem_RawCalloc(1, sizeof(cache));
            if (c != NULL) {
                c->interp = id;
                c->generation = atomic_load(&registry.generation);
                c->next = registry.caches;
                registry.caches = c;
            }
        }
        registry_unlock();
        if (c == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        tls_cache.interp = id;
        tls_cache.c = c;
    }
    uint64_t gen = atomic_load_explicit(&registry.generation,
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

/* Forget `type` in the fast table (registry mutex held). */
static void
fast_forget_locked(PyTypeObject *type)
{
    assert(REGISTRY_LOCKED());
    for (int i = 0; i < NFAST; i++) {
        if (atomic_load_explicit(&fast[i].type, memory_order_relaxed)
            == type)
        {
            atomic_store_explicit(&fast[i].type, NULL,
                                  memory_order_relaxed);
        }
    }
}

static inline int
visible(const tps_entry *e, int64_t interp)
{
    return e->interp < 0 || e->interp == interp;
}

/* The entry for `type` seen from `interp`, with the registry mutex held:
 * exact match, then subclass-accepting bases on the MRO, then the buffer
 * fallback.  Borrowed, or NULL. */
static tps_entry *
resolve_locked(PyTypeObject *type, int64_t interp)
{
    assert(REGISTRY_LOCKED());
    int found;
    tps_entry *e = ptrmap_get(&registry.bytype, type, &found);
    if (found && visible(e, interp)) {
        return e;
    }
    PyObject *mro = type->tp_mro;
    if (mro != NULL && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(mro); i++) {
            PyObject *base = PyTuple_GET_ITEM(mro, i);
            e = ptrmap_get(&registry.bytype, base, &found);
            if (found && visible(e, interp)) {
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
    registry_lock();
    tps_entry *e = resolve_locked(type, c->interp);
    if (e != NULL) {
        /* The cache's reference keeps `e` alive until this interpreter
         * next enters the registry, even if a writer removes it now (the
         * stale cache is flushed on that next entry). */
        tps_entry_incref(e);
    }
    registry_unlock();
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
    registry_lock();
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *cand = s->value;
        if (visible(cand, id) && strcmp(cand->name, sent->name) == 0) {
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
        if (c->generation == atomic_load(&registry.generation)
            && ptrmap_set(&c->byentry, sent, e) == 0)
        {
            tps_entry_incref(sent);
            cached = 1;
        }
    }
    registry_unlock();
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
 * Registering and unregistering.
 */

static int
check_hooks(const TpShare_Hooks *hooks)
{
    if (hooks == NULL) {
        PyErr_SetString(PyExc_ValueError, "hooks must not be NULL");
        return -1;
    }
    if (hooks->abi_version != TPSHARE_ABI_VERSION) {
        PyErr_Format(PyExc_ValueError,
                     "hooks of ABI version %u, tpshare provides %d",
                     (unsigned int)hooks->abi_version, TPSHARE_ABI_VERSION);
        return -1;
    }
    /* The growth rule of TpShare_Hooks (include/tpshare.h): every version
     * so far has the same fields, so the smallest size accepted is ours.
     * A bigger struct comes from a newer header; the fields it adds are
     * unknown here and only harmless when left zero. */
    if (hooks->size < sizeof(TpShare_Hooks)) {
        PyErr_Format(PyExc_ValueError,
                     "hooks of %u bytes, tpshare needs at least %zu "
                     "(initialise them with TPSHARE_HOOKS_INIT)",
                     (unsigned int)hooks->size, sizeof(TpShare_Hooks));
        return -1;
    }
    if (hooks->size > sizeof(TpShare_Hooks)) {
        const unsigned char *extra = (const unsigned char *)hooks;
        for (size_t i = sizeof(TpShare_Hooks); i < hooks->size; i++) {
            if (extra[i] != 0) {
                PyErr_Format(PyExc_ValueError,
                             "hooks of %u bytes set fields this tpshare "
                             "does not know (it knows %zu bytes; byte %zu "
                             "is not zero)",
                             (unsigned int)hooks->size,
                             sizeof(TpShare_Hooks), i);
                return -1;
            }
        }
    }
    if (hooks->name == NULL || hooks->name[0] == '\0') {
        PyErr_SetString(PyExc_ValueError, "hooks need a name");
        return -1;
    }
    if (hooks->share == NULL || hooks->rebuild == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "hooks of '%s' need both share and rebuild",
                     hooks->name);
        return -1;
    }
    return 0;
}

/* Tell every interpreter's cache that the table changed (mutex held). */
static void
bump_generation(void)
{
    assert(REGISTRY_LOCKED());
    atomic_fetch_add_explicit(&registry.generation, 1, memory_order_release);
}

/* Remove the entry of `type` visible in `interp`, mutex held.  Returns the
 * removed entry (the table's reference passes to the caller) or NULL. */
static tps_entry *
entry_remove_locked(PyTypeObject *type, int64_t interp)
{
    assert(REGISTRY_LOCKED());
    int found;
    tps_entry *e = ptrmap_get(&registry.bytype, type, &found);
    if (!found || !visible(e, interp)) {
        return NULL;
    }
    ptrmap_del(&registry.bytype, type);
    fast_forget_locked(type);
    if (e->interp >= 0) {
        /* A heap type's entry is read without the mutex under its own
         * interpreter's GIL only, so it is only written there. */
        assert(e->interp == tps_current_interp_id());
        e->type = NULL;
    }
    bump_generation();
    return e;
}

/* Called (in the owning interpreter) when a registered heap type dies:
 * `self` is an int holding the type's address. */
static PyObject *
heap_type_died(PyObject *self, PyObject *Py_UNUSED(wr))
{
    void *type = PyLong_AsVoidPtr(self);
    if (type == NULL && PyErr_Occurred()) {
        return NULL;
    }
    registry_lock();
    tps_entry *e = entry_remove_locked(type, tps_current_interp_id());
    registry_unlock();
    if (e != NULL) {
        tps_entry_decref(e);
    }
    Py_RETURN_NONE;
}

static PyMethodDef heap_type_died_def = {
    "_heap_type_died", heap_type_died, METH_O, NULL,
};

/* Keep a weakref with a callback on the heap type `type` (borrowed) so its
 * registration vanishes with it.  The weakref is kept alive by the
 * interpreter's dict.  Returns 0 or -1 with an exception. */
static int
watch_heap_type(PyTypeObject *type)
{
    static const char key[] = "tpshare.heap_type_watch";
    PyObject *idict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    PyObject *watch = NULL, *addr = NULL, *cb = NULL, *wr = NULL;
    int rc = -1;

    if (idict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no interpreter dict");
        return -1;
    }
    watch = Py_XNewRef(PyDict_GetItemString(idict, key));
    if (watch == NULL) {
        watch = PyDict_New();
        if (watch == NULL || PyDict_SetItemString(idict, key, watch) < 0) {
            goto finally;
        }
    }
    addr = PyLong_FromVoidPtr(type);
    if (addr == NULL) {
        goto finally;
    }
    int has = PyDict_Contains(watch, addr);
    if (has != 0) {
        rc = has < 0 ? -1 : 0;
        goto finally;
    }
    cb = PyCFunction_New(&heap_type_died_def, addr);
    if (cb == NULL) {
        goto finally;
    }
    wr = PyWeakref_NewRef((PyObject *)type, cb);
    if (wr == NULL || PyDict_SetItem(watch, addr, wr) < 0) {
        goto finally;
    }
    rc = 0;
finally:
    Py_XDECREF(wr);
    Py_XDECREF(cb);
    Py_XDECREF(addr);
    Py_XDECREF(watch);
    return rc;
}

int
tps_registry_register(PyTypeObject *type, const TpShare_Hooks *hooks,
                      unsigned int flags)
{
    if (type == NULL || !PyType_Check((PyObject *)type)) {
        PyErr_SetString(PyExc_TypeError, "Register() needs a type");
        return -1;
    }
    if (check_hooks(hooks) < 0) {
        return -1;
    }
    int heap = PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE);
    int64_t cur = tps_current_interp_id();
    int64_t scope = heap ? cur : -1;
    if (heap && watch_heap_type(type) < 0) {
        return -1;
    }
    tps_entry *e = tps_entry_new(type, scope, hooks);
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    tps_entry *old = NULL;
    tps_entry *clash = NULL;

    registry_lock();
    int found;
    tps_entry *prev = ptrmap_get(&registry.bytype, type, &found);
    if (found && !(flags & TPSHARE_REPLACE)) {
        /* Held for its name: another thread may unregister it as soon as
         * the mutex is released. */
        tps_entry_incref(prev);
        clash = prev;
        goto error;
    }
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *other = s->value;
        if (other->type != type && strcmp(other->name, e->name) == 0
            && (other->interp < 0 || scope < 0 || other->interp == scope))
        {
            registry_unlock();
            PyErr_Format(PyExc_ValueError,
                         "the name '%s' is already registered for "
                         "another type", e->name);
            tps_entry_decref(e);
            return -1;
        }
    }
    if (found) {
        old = entry_remove_locked(type, prev->interp);
    }
    if (ptrmap_set(&registry.bytype, type, e) < 0) {
        registry_unlock();
        if (old != NULL) {
            tps_entry_decref(old);
        }
        tps_entry_decref(e);
        PyErr_NoMemory();
        return -1;
    }
    bump_generation();
    registry_unlock();
    if (old != NULL) {
        tps_entry_decref(old);
    }
    return 0;

error:
    registry_unlock();
    PyErr_Format(PyExc_ValueError,
                 "type '%s' is already registered as '%s' (pass "
                 "TPSHARE_REPLACE to replace it)", type->tp_name,
                 clash->name);
    tps_entry_decref(clash);
    tps_entry_decref(e);
    return -1;
}

int
tps_registry_unregister(PyTypeObject *type)
{
    if (type == NULL) {
        PyErr_SetString(PyExc_TypeError, "Unregister() needs a type");
        return -1;
    }
    registry_lock();
    tps_entry *e = entry_remove_locked(type, tps_current_interp_id());
    registry_unlock();
    if (e == NULL) {
        PyErr_Format(PyExc_KeyError, "type '%s' is not registered",
                     type->tp_name);
        return -1;
    }
    tps_entry_decref(e);
    return 0;
}

int
tps_registry_lookup(PyTypeObject *type, TpShare_Hooks *out)
{
    if (type == NULL || out == NULL) {
        PyErr_SetString(PyExc_TypeError, "Lookup() needs a type and out");
        return -1;
    }
    tps_entry *e = tps_registry_find(type);
    if (e == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    *out = e->hooks;
    return 1;
}

tps_entry **
tps_registry_visible_entries(int64_t interp, size_t *n)
{
    registry_lock();
    size_t k = 0;
    tps_entry **snap = PyMem_RawMalloc((registry.bytype.used + 1)
                                       * sizeof(tps_entry *));
    if (snap != NULL) {
        PTRMAP_FOREACH(&registry.bytype, s) {
            tps_entry *e = s->value;
            if (visible(e, interp)) {
                tps_entry_incref(e);
                snap[k++] = e;
            }
        }
    }
    registry_unlock();
    *n = k;
    return snap;
}

/* ---------------------------------------------------------------------
 * Set-up and per-interpreter teardown.
 */

static int init_builtins(int (*register_builtins)(void));

int
tps_registry_init_with(int (*register_builtins)(void))
{
    /* Serializes first imports racing in several interpreters, so none
     * proceeds before the built-ins are registered. */
    static pthread_mutex_t init_mutex = PTHREAD_MUTEX_INITIALIZER;
    int rc = 0;

    pthread_mutex_lock(&init_mutex);
    if (!registry.initialized) {
        rc = init_builtins(register_builtins);
        registry.initialized = rc == 0;
    }
    pthread_mutex_unlock(&init_mutex);
    return rc;
}

/* Register the built-in handlers; once per process. */
static int
init_builtins(int (*register_builtins)(void))
{
    if (register_builtins() < 0) {
        return -1;
    }
    /* The built-in registrations never die (an Unregister of one leaks a
     * small entry): records skip refcounting them. */
    registry_lock();
    int i = 0;
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *e = s->value;
        e->immortal = 1;
        if (i < NFAST) {
            fast[i].entry = e;
            atomic_store_explicit(&fast[i].type, e->type,
                                  memory_order_relaxed);
            i++;
        }
    }
    registry_unlock();
    tps_buffer_entry->immortal = 1;
    tps_buffer_writable_entry->immortal = 1;
    tps_pickle_entry->immortal = 1;
    return 0;
}

void
tps_registry_forget_interp(int64_t interp)
{
    tps_entry **dead = NULL;
    size_t ndead = 0;
    cache *gone = NULL;

    /* Runs in the exiting interpreter (its exit hook), the only one that
     * reads its heap types' entries without the mutex and uses its
     * cache. */
    assert(tps_thread_state() != NULL);
    assert(interp == tps_current_interp_id());
    registry_lock();
    dead = PyMem_RawMalloc((registry.bytype.used + 1) * sizeof(tps_entry *));
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *e = s->value;
        if (e->interp == interp && dead != NULL) {
            dead[ndead++] = e;
            e->type = NULL;  /* a heap type of the exiting interpreter */
            ptrmap_delete_current(&registry.bytype, s);
        }
    }
    for (cache **pc = &registry.caches; *pc != NULL; pc = &(*pc)->next) {
        if ((*pc)->interp == interp) {
            gone = *pc;
            *pc = gone->next;
            break;
        }
    }
    if (ndead) {
        bump_generation();
    }
    registry_unlock();

    if (tls_cache.interp == interp) {
        tls_cache.interp = -1;
        tls_cache.c = NULL;
    }
    if (gone != NULL) {
        cache_flush(gone);
        PyMem_RawFree(gone);
    }
    for (size_t i = 0; i < ndead; i++) {
        tps_entry_decref(dead[i]);
    }
    PyMem_RawFree(dead);
}

void
tps_registry_atfork(tps_fork_phase phase)
{
    /* Taken before the fork (nothing under it waits for anything but
     * memory), so that the child gets the table whole. */
    switch (phase) {
    case TPS_FORK_PREPARE:
        pthread_mutex_lock(&registry.mutex);
        break;
    case TPS_FORK_PARENT:
        pthread_mutex_unlock(&registry.mutex);
        break;
    case TPS_FORK_CHILD:
        pthread_mutex_unlock(&registry.mutex);
        break;
    }
}
