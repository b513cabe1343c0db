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
 * Concurrency: writers (register, unregister) take the table's mutex and
 * bump its generation.  Readers go through lookup.c: a lookup cache per
 * interpreter, flushed when it sees a new generation, in front of this
 * table; the table's layout (registry_layout.h) is shared by the two
 * files only.
 */
#include "registry_layout.h"
#include "fork.h"
#include "owner.h"
#include "ptrmap.h"
#include "record.h"

#include <string.h>

/* ---------------------------------------------------------------------
 * The process-wide table and its mutex.
 */

tps_registry_table tps_registry = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
};

#ifndef NDEBUG
static TPS_TLS int tls_holds_registry;

int
tps_registry_locked(void)
{
    return tls_holds_registry != 0;
}
#endif

void
tps_registry_lock(void)
{
    pthread_mutex_lock(&tps_registry.mutex);
#ifndef NDEBUG
    assert(!tls_holds_registry);
    tls_holds_registry = 1;
#endif
}

void
tps_registry_unlock(void)
{
#ifndef NDEBUG
    assert(tls_holds_registry);
    tls_holds_registry = 0;
#endif
    pthread_mutex_unlock(&tps_registry.mutex);
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
    assert(tps_registry_locked());
    atomic_fetch_add_explicit(&tps_registry.generation, 1,
                              memory_order_release);
}

/* Remove the entry of `type` visible in `interp`, mutex held.  Returns the
 * removed entry (the table's reference passes to the caller) or NULL. */
static tps_entry *
entry_remove_locked(PyTypeObject *type, int64_t interp)
{
    assert(tps_registry_locked());
    int found;
    tps_entry *e = ptrmap_get(&tps_registry.bytype, type, &found);
    if (!found || !tps_entry_visible(e, interp)) {
        return NULL;
    }
    ptrmap_del(&tps_registry.bytype, type);
    tps_registry_fast_forget_locked(type);
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
    tps_registry_lock();
    tps_entry *e = entry_remove_locked(type, tps_current_interp_id());
    tps_registry_unlock();
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

    tps_registry_lock();
    int found;
    tps_entry *prev = ptrmap_get(&tps_registry.bytype, type, &found);
    if (found && !(flags & TPSHARE_REPLACE)) {
        /* Held for its name: another thread may unregister it as soon as
         * the mutex is released. */
        tps_entry_incref(prev);
        clash = prev;
        goto error;
    }
    PTRMAP_FOREACH(&tps_registry.bytype, s) {
        tps_entry *other = s->value;
        if (other->type != type && strcmp(other->name, e->name) == 0
            && (other->interp < 0 || scope < 0 || other->interp == scope))
        {
            tps_registry_unlock();
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
    if (ptrmap_set(&tps_registry.bytype, type, e) < 0) {
        tps_registry_unlock();
        if (old != NULL) {
            tps_entry_decref(old);
        }
        tps_entry_decref(e);
        PyErr_NoMemory();
        return -1;
    }
    bump_generation();
    tps_registry_unlock();
    if (old != NULL) {
        tps_entry_decref(old);
    }
    return 0;

error:
    tps_registry_unlock();
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
    tps_registry_lock();
    tps_entry *e = entry_remove_locked(type, tps_current_interp_id());
    tps_registry_unlock();
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
    tps_registry_lock();
    size_t k = 0;
    tps_entry **snap = PyMem_RawMalloc((tps_registry.bytype.used + 1)
                                       * sizeof(tps_entry *));
    if (snap != NULL) {
        PTRMAP_FOREACH(&tps_registry.bytype, s) {
            tps_entry *e = s->value;
            if (tps_entry_visible(e, interp)) {
                tps_entry_incref(e);
                snap[k++] = e;
            }
        }
    }
    tps_registry_unlock();
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
    if (!tps_registry.initialized) {
        rc = init_builtins(register_builtins);
        tps_registry.initialized = rc == 0;
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
    tps_registry_lock();
    PTRMAP_FOREACH(&tps_registry.bytype, s) {
        tps_entry *e = s->value;
        e->immortal = 1;
    }
    tps_registry_fast_fill_locked();
    tps_registry_unlock();
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
    tps_lookup_cache *gone = NULL;

    /* Runs in the exiting interpreter (its exit hook), the only one that
     * reads its heap types' entries without the mutex and uses its
     * cache. */
    assert(tps_thread_state() != NULL);
    assert(interp == tps_current_interp_id());
    tps_registry_lock();
    dead = PyMem_RawMalloc((tps_registry.bytype.used + 1)
                           * sizeof(tps_entry *));
    PTRMAP_FOREACH(&tps_registry.bytype, s) {
        tps_entry *e = s->value;
        if (e->interp == interp && dead != NULL) {
            dead[ndead++] = e;
            e->type = NULL;  /* a heap type of the exiting interpreter */
            ptrmap_delete_current(&tps_registry.bytype, s);
        }
    }
    gone = tps_registry_cache_unlink_locked(interp);
    if (ndead) {
        bump_generation();
    }
    tps_registry_unlock();

    tps_registry_cache_drop(gone, interp);
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
        pthread_mutex_lock(&tps_registry.mutex);
        break;
    case TPS_FORK_PARENT:
        pthread_mutex_unlock(&tps_registry.mutex);
        break;
    case TPS_FORK_CHILD:
        pthread_mutex_unlock(&tps_registry.mutex);
        break;
    }
}
