/* module_state.h - the state of the tpshare module in one interpreter
 * (module.c): its exceptions, types and identity table.
 */
#ifndef TPSHARE_MODULE_STATE_H
#define TPSHARE_MODULE_STATE_H

#ifndef TPSHARE_BUILD_CORE
#error "module_state.h is internal to tpshare"
#endif

#include "common.h"
#include "ptrmap.h"

typedef struct {
    PyObject *Error;
    PyObject *NotShareableError;
    PyObject *ChannelClosed;
    PyObject *ChannelEmpty;
    PyObject *ChannelFull;
    PyObject *QueueEmpty;
    PyObject *QueueFull;
    PyObject *ItemInterpreterDestroyed;
    /* tpshare.UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE: index policy - 1
     * (TPS_UNBOUND_*), instances of UnboundType. */
    PyObject *unbound[3];
    PyTypeObject *UnboundType;
    PyTypeObject *SharedType;
    PyTypeObject *ViewType;
    PyTypeObject *TrackerType;
    PyTypeObject *ChannelType;
    PyTypeObject *MemChannelType;
    PyTypeObject *QueueType;
    PyTypeObject *BufferType;
    struct tps_identity *identity;   /* owned; identity.c */
    /* The interpreter's live handle of each channel, one table per
     * tps_kind (channel.c), and its live Buffer of each block
     * (buffer_type.c): what a handle that comes back by id (through
     * CPython's cross-interpreter data or a pickle) resolves to, so the
     * same object returns.  Keys are channels and blocks, values are
     * borrowed objects; each object's dealloc removes its own entry. */
    ptrmap handle_cache[3];
    ptrmap buffer_cache;
} tps_module_state;

#endif /* TPSHARE_MODULE_STATE_H */
