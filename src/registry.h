/* registry.h - the process-wide type registry (registry/registry.c,
 * lookup.c), the lowest layer but for the tools, and what the built-in
 * handlers (registry/handlers_*.c, above the public C API: see
 * registry/handlers.h) offer the layers above.
 */
#ifndef TPSHARE_REGISTRY_H
#define TPSHARE_REGISTRY_H

#ifndef TPSHARE_BUILD_CORE
#error "registry.h is internal to tpshare"
#endif

#include "common.h"

/* One registration.  Refcounted: the registry, per-interpreter lookup
 * caches and every record made with it hold a reference, so the hooks and
 * the name stay valid after Unregister() while records still use them. */
typedef struct tps_entry {
    atomic_long refcnt;
    /* The registered type.  Not a reference: a static type lives for the
     * process; a heap type's entry is unregistered (by a weakref callback)
     * before the type is freed.  NULL for the buffer-protocol fallback. */
    PyTypeObject *type;
    /* -1: process-wide (static types); otherwise the ID of the only
     * interpreter where this registration is visible. */
    int64_t interp;
    /* A copy of the caller's hooks; hooks.name points at `name`. */
    TpShare_Hooks hooks;
    /* Owned, raw memory; freed with the entry. */
    char *name;
    /* Built-in registrations live for the process: no refcounting. */
    int immortal;
} tps_entry;

/* A new entry (one reference) with a copy of `hooks`, or NULL on memory
 * failure.  Not registered anywhere. */
tps_entry *tps_entry_new(PyTypeObject *type, int64_t interp,
                         const TpShare_Hooks *hooks);
void tps_entry_incref(tps_entry *e);
void tps_entry_decref(tps_entry *e);

/* The entry used to share objects of `type` (borrowed) in the current
 * interpreter: exact registration, else a registration accepting
 * subclasses found on the MRO, else the buffer fallback when the type
 * exports buffers.  Returns a borrowed entry (valid until the current
 * interpreter next calls into the registry with the GIL released), or
 * NULL without an exception when the type is not shareable.  Needs the
 * GIL. */
tps_entry *tps_registry_find(PyTypeObject *type);

/* The built-in registration of exactly `type` when it is one of the
 * built-in types and unchanged, else NULL: a lock-free first check.
 * Borrowed (built-in entries are immortal). */
tps_entry *tps_registry_fast(PyTypeObject *type);

/* The current interpreter's entry for a record made with `sent`, found by
 * name: `sent` itself when it is visible here.  Returns a borrowed entry
 * or NULL with LookupError.  Needs the GIL. */
tps_entry *tps_registry_find_for_rebuild(tps_entry *sent);

int tps_registry_register(PyTypeObject *type, const TpShare_Hooks *hooks,
                          unsigned int flags);
int tps_registry_unregister(PyTypeObject *type);
int tps_registry_lookup(PyTypeObject *type, TpShare_Hooks *out);

/* The entries visible in interpreter `interp`, each with a new
 * reference, in a raw array the caller frees (PyMem_RawFree) with *n
 * set; NULL on memory failure. */
tps_entry **tps_registry_visible_entries(int64_t interp, size_t *n);

/* A list of (name, type, flags) visible in the current interpreter; new
 * reference (registry/registry_list.c). */
PyObject *tps_registry_list(void);

/* Process-wide set-up of the registry, once per process (idempotent):
 * `register_builtins` adds the built-in registrations (module init gives
 * tps_builtin_handlers_register, so that the registry itself knows no
 * handler).  And per-interpreter teardown of the registrations and
 * caches of interpreter `interp`. */
int tps_registry_init_with(int (*register_builtins)(void));
void tps_registry_forget_interp(int64_t interp);

/* Built-in handler registration (registry/handlers_*.c): each adds
 * its process-wide registrations through TpShare_CAPI.Register, as a
 * third-party extension does (the registry then makes them immortal).
 * tps_builtin_handlers_register() (registry/handlers_builtin.c) calls
 * them all; module init gives it to tps_registry_init_with(), once per
 * process. */
int tps_builtin_handlers_register(void);
int tps_handlers_scalar_init(void);
int tps_handlers_text_init(void);
int tps_handlers_tuple_init(void);
int tps_handlers_export_init(void);

/* The registration of pickled objects (Channel(fallback="pickle")):
 * shared as the bytes of pickle.dumps(), rebuilt with pickle.loads()
 * (registry/handlers_text.c).  Made with tps_entry_new(), not
 * registered: it belongs to no type (the channel picks it for objects
 * that have no registration), and the public API registers types. */
extern tps_entry *tps_pickle_entry;

/* The buffer-protocol fallback entry, and its writable variant used by
 * MemChannel.send(writable=True) (registry/handlers_export.c).  Made
 * with tps_entry_new(), not registered, for the same reason: the lookup
 * picks them by protocol (the type exports buffers), not by type. */
extern tps_entry *tps_buffer_entry;
extern tps_entry *tps_buffer_writable_entry;

/* Makes the object a rebuilt buffer export is a memoryview of: a view
 * (new reference) exporting the Py_buffer at data->ptr, held by the
 * record that embeds `data` (borrowed; the view holds that record), or
 * NULL with an exception.  Installed by the Python layer (view.c) when it
 * sets up its type; registry/handlers_export.c calls it.  It takes the
 * data, not the record, because the handlers see no record's layout. */
typedef PyObject *(*tps_view_maker)(const TpShare_Data *data);
void tps_export_set_view_maker(tps_view_maker fn);

/* bytes, and str with at least this many bytes of character data, are
 * shared owner-bound rather than copied (registry/handlers_text.c);
 * bench/bench_bytes_threshold.py and bench/bench_copy_sweep.py measure
 * where sharing starts to win (docs/design-copies.md: 2.4-3.4 KiB). */
#define TPS_BYTES_SHARE_MIN ((Py_ssize_t)3 * 1024)

/* The threshold the handlers read: TPS_BYTES_SHARE_MIN, always, in
 * production.  A variable rather than the constant only so that the
 * benchmarks' probe extension (tpshare.bench._probes) can force either
 * mode at any size, to measure the handler's own copy against its own
 * share; it finds the variable through tps_bytes_share_min_addr, the
 * one symbol the library exports for it (dlsym), as nothing in
 * tpshare._tpshare offers a way to change it.  Read relaxed: one load
 * in place of an immediate. */
extern _Atomic Py_ssize_t tps_bytes_share_min;

#endif /* TPSHARE_REGISTRY_H */
