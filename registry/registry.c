/* registry.c - the process-wide type registry.
 *
 * Maps a type to the hooks that share its instances (DESIGN.md D1, D2).
 * Static types are registered once for the process; heap types exist once
 * per interpreter, so their registrations are visible only in the
 * interpreter that made them and vanish with the type (a weakref callback
 * removes them before the type's memory can be reused).
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
 * private hash table.  Misses, MRO walks and lookups by name go to the
 * shared table under the mutex and are cached.
 */
#include "tpshare_internal.h"
#include "ptrmap.h"

#include <string.h>

/* ---------------------------------------------------------------------
 * Entries.
 */

void
tps_entry_incref(tps_entry *e)
{
    if (!e->immortal) {
        atomic_fetch_add_explicit(&e->refcnt, 1, memory_order_relaxed);
    }
}

void
tps_entry_decref(tps_entry *e)
{
    if (!e->immortal
        && atomic_fetch_sub_explicit(&e->refcnt, 1, memory_order_acq_rel)
           == 1)
    {
        PyMem_RawFree(e->name);
        PyMem_RawFree(e);
    }
}

tps_entry *
tps_entry_new(PyTypeObject *type, int64_t interp, const TpShare_Hooks *hooks)
{
    size_t n = strlen(hooks->name);
    tps_entry *e = PyMem_RawCalloc(1, sizeof(tps_entry));
    if (e == NULL) {
        return NULL;
    }
    e->name = PyMem_RawMalloc(n + 1);
    if (e->name == NULL) {
        PyMem_RawFree(e);
        return NULL;
    }
    memcpy(e->name, hooks->name, n + 1);
    atomic_init(&e->refcnt, 1);
    e->type = type;
    e->interp = interp;
    e->hooks = *hooks;
    e->hooks.name = e->name;
    return e;
}

/* ---------------------------------------------------------------------
 * The process-wide table and the per-interpreter caches.
 */

/* A cached lookup result that means "not shareable". */
#define NOT_SHAREABLE ((void *)2)

typedef struct cache {
    struct cache *next;      /* in registry.caches */
    int64_t interp;
    uint64_t generation;
    /* type -> entry or NOT_SHAREABLE; each entry value holds a ref. */
    ptrmap bytype;
    /* sent entry -> local entry; both hold a ref. */
    ptrmap byentry;
    /* A held entry that could not be cached for lack of memory. */
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

/* The current thread's last cache, to skip the search in registry.caches
 * while a thread stays in one interpreter.  The pointer is only used when
 * the interpreter ID matches, and IDs are never reused. */
static TPS_TLS struct {
    int64_t interp;
    cache *c;
} tls_cache = {-1, NULL};

static void
cache_flush(cache *c)
{
    PTRMAP_FOREACH(&c->bytype, s) {
        if (s->value != NOT_SHAREABLE) {
            tps_entry_decref(s->value);
        }
    }
    PTRMAP_FOREACH(&c->byentry, s) {
        tps_entry_decref(s->key);
        tps_entry_decref(s->value);
    }
    ptrmap_clear(&c->bytype);
    ptrmap_clear(&c->byentry);
    if (c->spare != NULL) {
        tps_entry_decref(c->spare);
        c->spare = NULL;
    }
}

/* The current interpreter's cache, flushed if stale.  NULL with
 * MemoryError.  Needs the GIL. */
static cache *
current_cache(void)
{
    int64_t id = tps_current_interp_id();
    cache *c = tls_cache.interp == id ? tls_cache.c : NULL;

    if (c == NULL) {
        pthread_mutex_lock(&registry.mutex);
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
        pthread_mutex_unlock(&registry.mutex);
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
 * values shared are of these types.  A slot is cleared for good when its
 * type's registration changes (replace or unregister), sending that type
 * back to the general path. */
#define NFAST 8
static struct {
    PyTypeObject *type;
    tps_entry *entry;
} fast[NFAST];

tps_entry *
tps_registry_fast(PyTypeObject *type)
{
    for (int i = 0; i < NFAST; i++) {
        if (fast[i].type == type) {
            return fast[i].entry;
        }
    }
    return NULL;
}

/* Forget `type` in the fast table (registry mutex held). */
static void
fast_forget(PyTypeObject *type)
{
    for (int i = 0; i < NFAST; i++) {
        if (fast[i].type == type) {
            fast[i].type = NULL;
            fast[i].entry = NULL;
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
    int found;
    void *v = ptrmap_get(&c->bytype, type, &found);
    if (found) {
        return v == NOT_SHAREABLE ? NULL : v;
    }
    pthread_mutex_lock(&registry.mutex);
    tps_entry *e = resolve_locked(type, c->interp);
    if (e != NULL) {
        /* The cache's reference keeps `e` alive until this interpreter
         * next enters the registry, even if a writer removes it now (the
         * stale cache is flushed on that next entry). */
        tps_entry_incref(e);
    }
    int rc = ptrmap_set(&c->bytype, type, e ? (void *)e : NOT_SHAREABLE);
    if (rc < 0 && e != NULL) {
        /* No room to cache it: park the reference in c->spare instead. */
        if (c->spare != NULL) {
            tps_entry_decref(c->spare);
        }
        c->spare = e;
    }
    pthread_mutex_unlock(&registry.mutex);
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
    pthread_mutex_lock(&registry.mutex);
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *cand = s->value;
        if (visible(cand, id) && strcmp(cand->name, sent->name) == 0) {
            e = cand;
            break;
        }
    }
    if (e != NULL && c->generation == atomic_load(&registry.generation)
        && ptrmap_set(&c->byentry, sent, e) == 0)
    {
        tps_entry_incref(sent);
        tps_entry_incref(e);
    }
    pthread_mutex_unlock(&registry.mutex);
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

static void
bump_generation(void)
{
    atomic_fetch_add_explicit(&registry.generation, 1, memory_order_release);
}

/* Remove the entry of `type` visible in `interp`, mutex held.  Returns the
 * removed entry (the table's reference passes to the caller) or NULL. */
static tps_entry *
remove_locked(PyTypeObject *type, int64_t interp)
{
    int found;
    tps_entry *e = ptrmap_get(&registry.bytype, type, &found);
    if (!found || !visible(e, interp)) {
        return NULL;
    }
    ptrmap_del(&registry.bytype, type);
    fast_forget(type);
    if (e->interp >= 0) {
        /* Read without the mutex only under this interpreter's GIL. */
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
    pthread_mutex_lock(&registry.mutex);
    tps_entry *e = remove_locked(type, tps_current_interp_id());
    pthread_mutex_unlock(&registry.mutex);
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
    const char *clash = NULL;

    pthread_mutex_lock(&registry.mutex);
    int found;
    tps_entry *prev = ptrmap_get(&registry.bytype, type, &found);
    if (found && !(flags & TPSHARE_REPLACE)) {
        clash = prev->name;
        goto refuse;
    }
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *other = s->value;
        if (other->type != type && strcmp(other->name, e->name) == 0
            && (other->interp < 0 || scope < 0 || other->interp == scope))
        {
            pthread_mutex_unlock(&registry.mutex);
            PyErr_Format(PyExc_ValueError,
                         "the name '%s' is already registered for "
                         "another type", e->name);
            tps_entry_decref(e);
            return -1;
        }
    }
    if (found) {
        old = remove_locked(type, prev->interp);
    }
    if (ptrmap_set(&registry.bytype, type, e) < 0) {
        pthread_mutex_unlock(&registry.mutex);
        if (old != NULL) {
            tps_entry_decref(old);
        }
        tps_entry_decref(e);
        PyErr_NoMemory();
        return -1;
    }
    bump_generation();
    pthread_mutex_unlock(&registry.mutex);
    if (old != NULL) {
        tps_entry_decref(old);
    }
    return 0;

refuse:
    pthread_mutex_unlock(&registry.mutex);
    PyErr_Format(PyExc_ValueError,
                 "type '%s' is already registered as '%s' (pass "
                 "TPSHARE_REPLACE to replace it)", type->tp_name, clash);
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
    pthread_mutex_lock(&registry.mutex);
    tps_entry *e = remove_locked(type, tps_current_interp_id());
    pthread_mutex_unlock(&registry.mutex);
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

static PyObject *
flags_tuple(uint32_t flags)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {TPSHARE_COPIES, "copies"},
        {TPSHARE_ZERO_COPY, "zero_copy"},
        {TPSHARE_SUBCLASSES, "subclasses"},
        {TPSHARE_ANY_RESULT, "any_result"},
        {TPSHARE_IMMUTABLE, "immutable"},
    };
    PyObject *res = PyTuple_New(0);
    for (size_t i = 0; res != NULL && i < Py_ARRAY_LENGTH(names); i++) {
        if (flags & names[i].bit) {
            PyObject *s = PyUnicode_FromString(names[i].name);
            if (s == NULL || _PyTuple_Resize(&res, PyTuple_GET_SIZE(res) + 1)
                < 0)
            {
                Py_XDECREF(s);
                Py_CLEAR(res);
                break;
            }
            PyTuple_SET_ITEM(res, PyTuple_GET_SIZE(res) - 1, s);
        }
    }
    return res;
}

static PyObject *
describe(const char *name, PyObject *type, uint32_t flags)
{
    PyObject *f = flags_tuple(flags);
    if (f == NULL) {
        return NULL;
    }
    return Py_BuildValue("(sON)", name, type, f);
}

PyObject *
tps_registry_list(void)
{
    int64_t id = tps_current_interp_id();
    PyObject *res = PyList_New(0);
    PyObject *item = NULL;
    if (res == NULL) {
        return NULL;
    }
    /* Collect under the mutex without touching Python objects' refcounts
     * beyond the current interpreter's own: static types are immortal
     * or process-wide; heap types listed are the current interpreter's. */
    pthread_mutex_lock(&registry.mutex);
    size_t n = registry.bytype.used, k = 0;
    tps_entry **snap = PyMem_RawMalloc((n + 1) * sizeof(tps_entry *));
    if (snap != NULL) {
        PTRMAP_FOREACH(&registry.bytype, s) {
            tps_entry *e = s->value;
            if (visible(e, id)) {
                tps_entry_incref(e);
                snap[k++] = e;
            }
        }
    }
    pthread_mutex_unlock(&registry.mutex);
    if (snap == NULL) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < k; i++) {
        tps_entry *e = snap[i];
        PyObject *type = e->type ? (PyObject *)e->type : Py_None;
        if (res != NULL) {
            item = describe(e->name, type, e->hooks.flags);
            if (item == NULL || PyList_Append(res, item) < 0) {
                Py_CLEAR(res);
            }
            Py_CLEAR(item);
        }
        tps_entry_decref(e);
    }
    PyMem_RawFree(snap);
    if (res != NULL) {
        item = describe(tps_buffer_entry->name, Py_None,
                        tps_buffer_entry->hooks.flags);
        if (item == NULL || PyList_Append(res, item) < 0) {
            Py_CLEAR(res);
        }
        Py_XDECREF(item);
    }
    if (res != NULL && PyList_Sort(res) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* ---------------------------------------------------------------------
 * Set-up and per-interpreter teardown.
 */

static int init_builtins(void);

int
tps_registry_init(void)
{
    /* Serializes first imports racing in several interpreters, so none
     * proceeds before the built-ins are registered. */
    static pthread_mutex_t init_mutex = PTHREAD_MUTEX_INITIALIZER;
    int rc = 0;

    pthread_mutex_lock(&init_mutex);
    if (!registry.initialized) {
        rc = init_builtins();
        registry.initialized = rc == 0;
    }
    pthread_mutex_unlock(&init_mutex);
    return rc;
}

/* Register the built-in handlers; once per process. */
static int
init_builtins(void)
{
    if (tps_handlers_scalar_init() < 0 || tps_handlers_text_init() < 0
        || tps_handlers_tuple_init() < 0 || tps_handlers_buffer_init() < 0)
    {
        return -1;
    }
    /* The built-in registrations never die (an Unregister of one leaks a
     * small entry): records skip refcounting them. */
    pthread_mutex_lock(&registry.mutex);
    int i = 0;
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *e = s->value;
        e->immortal = 1;
        if (i < NFAST) {
            fast[i].type = e->type;
            fast[i].entry = e;
            i++;
        }
    }
    pthread_mutex_unlock(&registry.mutex);
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

    pthread_mutex_lock(&registry.mutex);
    dead = PyMem_RawMalloc((registry.bytype.used + 1) * sizeof(tps_entry *));
    PTRMAP_FOREACH(&registry.bytype, s) {
        tps_entry *e = s->value;
        if (e->interp == interp && dead != NULL) {
            dead[ndead++] = e;
            e->type = NULL;  /* a heap type of the exiting interpreter */
            s->key = PTRMAP_TOMBSTONE;
            s->value = NULL;
            registry.bytype.used--;
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
    pthread_mutex_unlock(&registry.mutex);

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
        pthread_mutex_init(&registry.mutex, NULL);
        break;
    }
}
