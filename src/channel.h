/* channel.h - declarations shared by the files of the channel handles:
 * tpshare.Channel, tpshare.MemChannel and tpshare.Queue.
 *
 *   channel.c       the handle types: creation, lifetime, the methods
 *                   that only read the channel, the type objects;
 *   handle_io.c     the send and receive methods (Channel, MemChannel
 *                   and Queue's PEP 734 API), argument checking;
 *   objlayer.c      what goes in and what comes out: objects to records
 *                   and back, the pickle fallback, one send and one recv;
 *   unbound.c       items whose sender ended (unbounditems markers);
 *   handle_share.c  the registry hooks that let a handle cross
 *                   interpreters;
 *   args.c          the keyword parser of the hot methods.
 *
 * All of it sits on the channel core (chancore.c) and the records
 * (record.c), declared in tpshare_internal.h.
 */
#ifndef TPSHARE_CHANNEL_H
#define TPSHARE_CHANNEL_H

#ifndef TPSHARE_BUILD_CORE
#error "channel.h is internal to tpshare; include tpshare.h instead"
#endif

#include "tpshare_internal.h"

/* A Channel, MemChannel or Queue object: a handle on one channel. */
typedef struct {
    PyObject_HEAD
    tps_channel *ch;             /* held */
    /* The exception of the item at which a recv_many() stopped after
     * rebuilding the items before it (returned by that call): raised by
     * the next receive on this handle.  Strong reference, or NULL. */
    PyObject *pending;
    /* How many items recv_many() takes out of the channel at most: the
     * count its last call returned when that call's copies reached its
     * limit (handle_io.c), doubled while calls fill it; 0: no limit. */
    Py_ssize_t many_hint;
    /* Its tps_kind (below), as tps_handle_kind() tells it: set at
     * creation, so that a send or receive that needs no module state
     * does not look the state up to learn it. */
    int kind;
} tps_handle;

typedef enum { TPS_KIND_CHANNEL, TPS_KIND_MEM, TPS_KIND_QUEUE } tps_kind;

/* The module state of a handle's class (op: borrowed). */
static inline tps_module_state *
tps_handle_state(PyObject *op)
{
    return PyType_GetModuleState(Py_TYPE(op));
}

/* Which of the three types `self` (borrowed) is. */
static inline tps_kind
tps_handle_kind(PyObject *self, tps_module_state *state)
{
    PyTypeObject *tp = Py_TYPE(self);
    return tp == state->MemChannelType ? TPS_KIND_MEM
           : tp == state->QueueType ? TPS_KIND_QUEUE : TPS_KIND_CHANNEL;
}

/* channel.c */
/* A handle of `type` on `ch`, taking over the caller's reference.  New
 * reference, or NULL (the channel reference is then released). */
PyObject *tps_handle_wrap(PyTypeObject *type, tps_channel *ch);
/* The interpreter's handle of kind `k` on `ch`: the live one it already
 * has, or a new one, taking over the caller's reference to `ch` either
 * way.  New reference, or NULL (the channel reference is then
 * released). */
PyObject *tps_handle_get(tps_module_state *state, tps_kind k,
                         tps_channel *ch);
/* Raise the exception left by an earlier recv_many() on `self`
 * (borrowed), if any: returns -1 then, else 0. */
int tps_handle_raise_pending(PyObject *self);
/* Raise for a TPS_ERR_* code; Queue handles raise QueueEmpty/QueueFull.
 * Returns NULL. */
PyObject *tps_handle_raise(PyObject *self, tps_module_state *state,
                           int code);

/* args.c: keyword parsing for the hot methods, without PyArg's overhead.
 * Positional parameters fill pos[0..npos_max); keyword-only ones (names
 * in kwlist) fill kw[].  Unset slots stay NULL; all borrowed.  Returns 0
 * or -1 with TypeError. */
int tps_parse_args(const char *fname, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t npos_min,
                   Py_ssize_t npos_max, const char *const *posnames,
                   PyObject **pos, const char *const *kwlist,
                   PyObject **kw);

/* unbound.c */
/* The TPS_UNBOUND_* named by an unbounditems argument (borrowed), or
 * `none` for None.  0 or -1 with TypeError. */
int tps_parse_unbound(tps_module_state *state, PyObject *arg,
                      unsigned int none, unsigned int *policy);
/* Make the UNBOUND objects and ItemInterpreterDestroyed of this
 * interpreter's module (borrowed).  0 or -1 with an exception. */
int tps_unbound_init(PyObject *module, tps_module_state *state);

/* objlayer.c */
/* Whether what is sent through handle `self` (borrowed) of kind k may be
 * immediate items (item.h): a Channel or Queue with identity off. */
int tps_obj_immediates(PyObject *self, tps_kind k);
/* The record for `obj` (borrowed) sent through handle `self` (borrowed)
 * by interpreter `owner` (the current one), or NULL.  Never an immediate
 * item: senders try tps_imm_make() first where tps_obj_immediates(). */
TpShare_Record *tps_obj_record(PyObject *self, tps_kind k,
                               tps_module_state *state, PyObject *obj,
                               int writable, int64_t owner);
/* The received object for `rec` (borrowed; a record or an immediate
 * item).  New reference or NULL. */
PyObject *tps_obj_rebuild(tps_kind k, tps_module_state *state,
                          TpShare_Record *rec);
/* Send `obj` (borrowed) through `self`: new reference to None, or a
 * Tracker for a MemChannel; NULL with nothing queued. */
PyObject *tps_obj_send(PyObject *self, PyObject *obj, int64_t timeout,
                       int writable, unsigned int unbound);
/* Receive one object from `self`.  New reference or NULL. */
PyObject *tps_obj_recv(PyObject *self, int64_t timeout);

/* handle_io.c: the vectorcall methods (self and args borrowed; new
 * reference or NULL). */
PyObject *tps_chan_send(PyObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_chan_send_many(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_chan_recv(PyObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_chan_recv_many(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_queue_put(PyObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_queue_get(PyObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_queue_put_nowait(PyObject *self, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_queue_get_nowait(PyObject *self, PyObject *ignored);

/* handle_share.c: the registrations of the three handle types. */
extern const TpShare_Hooks tps_channel_hooks;
extern const TpShare_Hooks tps_memchannel_hooks;
extern const TpShare_Hooks tps_queue_hooks;
/* handle.__reduce__() (self: borrowed; new reference or NULL): pickled
 * by id, for this process only. */
PyObject *tps_handle_reduce(PyObject *self, PyObject *ignored);
/* Add the unpickling function of handles and Buffers to `module`
 * (borrowed).  0 or -1. */
int tps_handle_pickle_init(PyObject *module);

#endif /* TPSHARE_CHANNEL_H */
