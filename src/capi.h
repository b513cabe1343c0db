/* capi.h - the functions behind the public C API table (TpShare_CAPI,
 * include/tpshare.h) and the one initializer of that table.
 *
 * capi.c makes the exported table from TPS_CAPI_INIT.  tpshare's
 * built-in handlers (registry/handlers.h) make a constant copy of it
 * from the same initializer and call every function through that copy's
 * members, exactly as a third-party extension calls through
 * TpShare_API: so they use nothing the table does not offer, and since
 * the compiler sees the copy's contents it emits direct calls to the
 * very functions the exported table points to (a call through a pointer
 * loaded from the table costs a few instructions more on the path of
 * every share and rebuild).  The prototypes repeat those of record.h and
 * registry.h, which the handlers do not include; a difference fails the
 * build of capi.c, which sees both.
 */
#ifndef TPSHARE_CAPI_H
#define TPSHARE_CAPI_H

#ifndef TPSHARE_BUILD_CORE
#error "capi.h is internal to tpshare"
#endif

#include "common.h"

int tps_registry_register(PyTypeObject *type, const TpShare_Hooks *hooks,
                          unsigned int flags);
/* Register() of the table: tps_registry_register() that also bridges a
 * type registered with TPSHARE_BRIDGE (capi.c). */
int tps_capi_register(PyTypeObject *type, const TpShare_Hooks *hooks,
                      unsigned int flags);
int tps_xid_bridge(PyTypeObject *type);
int tps_registry_unregister(PyTypeObject *type);
int tps_registry_lookup(PyTypeObject *type, TpShare_Hooks *out);
int tps_is_shareable(PyObject *obj);
TpShare_Record *tps_share(PyObject *obj);
PyObject *tps_rebuild(TpShare_Record *rec);
void tps_record_release(TpShare_Record *rec);
int64_t tps_capi_owner(const TpShare_Record *rec);
TpShare_Record *tps_share_item(PyObject *obj, Py_ssize_t index);
int tps_share_must_copy(void);
void *tps_small_alloc(TpShare_Data *data, size_t n);

#define TPS_CAPI_INIT                                                   \
    {                                                                   \
        .abi_version = TPSHARE_ABI_VERSION,                             \
        .size = sizeof(TpShare_CAPI),                                   \
        .Register = tps_capi_register,                                  \
        .Unregister = tps_registry_unregister,                          \
        .Lookup = tps_registry_lookup,                                  \
        .IsShareable = tps_is_shareable,                                \
        .Share = tps_share,                                             \
        .Rebuild = tps_rebuild,                                         \
        .Release = tps_record_release,                                  \
        .Owner = tps_capi_owner,                                        \
        .Malloc = PyMem_RawMalloc,                                      \
        .Free = PyMem_RawFree,                                          \
        .ShareItem = tps_share_item,                                    \
        .MustCopy = tps_share_must_copy,                                \
        .DataAlloc = tps_small_alloc,                                   \
        .Bridge = tps_xid_bridge,                                       \
    }

/* The exported table (capi.c), published by module.c as the capsule. */
extern const TpShare_CAPI tps_capi;

#endif /* TPSHARE_CAPI_H */
