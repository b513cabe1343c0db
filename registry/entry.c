/* entry.c - registrations: the refcounted entries of the registry.
 *
 * An entry is one registration: the type, its scope (process-wide or one
 * interpreter) and a copy of its hooks and name, in raw memory.  The
 * registry (registry.c), the per-interpreter lookup caches and every
 * record made with it hold a reference, so that the hooks stay valid
 * after an Unregister() while records still use them.  Built-in entries
 * are immortal: no refcounting.
 */
#include "registry.h"

#include <string.h>

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
