/* capi.c - the C API table (TpShare_CAPI) that tpshare exports to other
 * extensions, as the capsule module.c publishes as tpshare._C_API (see
 * include/tpshare.h).  The table holds only function pointers, so the
 * same static table serves every interpreter.  Its entries are the
 * registry's, the records' and CPython's own functions, listed once in
 * TPS_CAPI_INIT (capi.h), which tpshare's built-in handlers use too.
 */
#include "tpshare_internal.h"
#include "cpython_xid.h"

/* TPSHARE_BRIDGE hooks also enter CPython's registry (cpython_xid.c); if
 * that fails, the registration is undone. */
int
tps_capi_register(PyTypeObject *type, const TpShare_Hooks *hooks,
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

int64_t
tps_capi_owner(const TpShare_Record *rec)
{
    return rec->owner;
}

_Static_assert(TPSHARE_DATA_ALLOC_MAX == TPS_COPY_MAX,
               "DataAlloc serves what the largest copy class holds");

const TpShare_CAPI tps_capi = TPS_CAPI_INIT;
