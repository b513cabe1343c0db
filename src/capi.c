/* capi.c - the C API table (TpShare_CAPI) that tpshare exports to other
 * extensions, as the capsule module.c publishes as tpshare._C_API (see
 * include/tpshare.h).  The table holds only function pointers, so the
 * same static table serves every interpreter; most entries are the
 * registry's and the records' own functions, the rest thin adapters.
 */
#include "tpshare_internal.h"
#include "cpython_xid.h"

/* TPSHARE_BRIDGE hooks also enter CPython's registry (cpython_xid.c); if
 * that fails, the registration is undone. */
static int
capi_register(PyTypeObject *type, const TpShare_Hooks *hooks,
              unsigned int flags)
{
    if (tps_registry_register(type, hooks, flags) < 0) {
        return -1;
    }
    if ((hooks->flags & TPSHARE_BRIDGE) && tps_xid_bridge(type) < 0) {
        PyObject *exc = PyErr_GetRaisedException();
        (void)tps_registry_unregister(type);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    return 0;
}

static int
capi_is_shareable(PyObject *obj)
{
    return tps_is_shareable(obj);
}

static TpShare_Record *
capi_share(PyObject *obj)
{
    return tps_share(obj);
}

static PyObject *
capi_rebuild(TpShare_Record *rec)
{
    return tps_rebuild(rec);
}

static int64_t
capi_owner(const TpShare_Record *rec)
{
    return rec->owner;
}

static void *
capi_malloc(size_t n)
{
    return PyMem_RawMalloc(n);
}

const TpShare_CAPI tps_capi = {
    .abi_version = TPSHARE_ABI_VERSION,
    .size = sizeof(TpShare_CAPI),
    .Register = capi_register,
    .Unregister = tps_registry_unregister,
    .Lookup = tps_registry_lookup,
    .IsShareable = capi_is_shareable,
    .Share = capi_share,
    .Rebuild = capi_rebuild,
    .Release = tps_record_release,
    .Owner = capi_owner,
    .Malloc = capi_malloc,
    .Free = PyMem_RawFree,
    .Bridge = tps_xid_bridge,
};
