/* cpython_xid.h - tpshare's objects in CPython's own cross-interpreter
 * machinery (cpython_xid.c, the one file that uses that private API).
 */
#ifndef TPSHARE_CPYTHON_XID_H
#define TPSHARE_CPYTHON_XID_H

#ifndef TPSHARE_BUILD_CORE
#error "cpython_xid.h is internal to tpshare"
#endif

#include "common.h"
#include "module_state.h"

/* Register the current interpreter's Channel, MemChannel, Queue and
 * Buffer types (in `state`) with CPython's registry of cross-interpreter
 * data, from the module's exec.  0 or -1 with an exception. */
int tps_xid_register_types(tps_module_state *state);

/* Let instances of `type` (borrowed), registered with tpshare, cross
 * CPython's own queues, channels and prepare_main() as tpshare share
 * records, in the current interpreter (the registry keeps heap types per
 * interpreter).  0, or -1 with TypeError when tpshare has no hooks for
 * the type, or another exception. */
int tps_xid_bridge(PyTypeObject *type);

#endif /* TPSHARE_CPYTHON_XID_H */
