/* registry_layout.h - the process-wide registration table, for the
 * registry's two files only: registry.c (registering, unregistering,
 * set-up and teardown) and lookup.c (the per-interpreter lookup caches
 * and the fast table of built-in types).  Everything else goes through
 * the functions of registry.h.
 */
#ifndef TPSHARE_REGISTRY_LAYOUT_H
#define TPSHARE_REGISTRY_LAYOUT_H

#ifndef TPSHARE_BUILD_CORE
#error "registry_layout.h is internal to tpshare"
#endif

#include "ptrmap.h"
#include "registry.h"

/* One interpreter's lookup cache (lookup.c). */
typedef struct tps_lookup_cache tps_lookup_cache;

/* Every live registration, shared by every interpreter.  Writers take
 * `mutex` and bump `generation`, which tells each lookup cache to flush
 * (registry.c says why this state is process-wide). */
typedef struct {
    pthread_mutex_t mutex;
    int initialized;
    atomic_uint_fast64_t generation;
    /* type -> entry (holds a ref), every live registration. */
    ptrmap bytype;
    /* One lookup cache per interpreter that used the registry, guarded
     * by `mutex`. */
    tps_lookup_cache *caches;
} tps_registry_table;

extern tps_registry_table tps_registry;

/* Take and release tps_registry.mutex (registry.c). */
void tps_registry_lock(void);
void tps_registry_unlock(void);

#ifndef NDEBUG
/* Whether the calling thread holds tps_registry.mutex: asserted by the
 * functions that need it (debug builds). */
int tps_registry_locked(void);
#endif

/* Whether the registration `e` is visible from interpreter `interp`:
 * process-wide, or made there. */
static inline int
tps_entry_visible(const tps_entry *e, int64_t interp)
{
    return e->interp < 0 || e->interp == interp;
}

/* The fast table (lookup.c), written with the mutex held: forget `type`
 * in it (its registration changed), and fill it, once, with the first
 * built-in registrations of the table. */
void tps_registry_fast_forget_locked(PyTypeObject *type);
void tps_registry_fast_fill_locked(void);

/* Teardown of the lookup cache of the exiting interpreter `interp`:
 * unlink it from tps_registry.caches (mutex held; NULL when it had
 * none), then, with the mutex released, let go of what it holds and of
 * the calling thread's pointer to it. */
tps_lookup_cache *tps_registry_cache_unlink_locked(int64_t interp);
void tps_registry_cache_drop(tps_lookup_cache *gone, int64_t interp);

#endif /* TPSHARE_REGISTRY_LAYOUT_H */
