/* objlayer.c - the object layer of the channel handles: what goes in
 * and what comes out.  An object sent becomes an immediate item when it
 * is a small value and the channel a Channel or Queue with identity off
 * (item.h, immediate.c), else a share record (through the
 * registry for Channel and Queue, with the pickle fallback when the
 * channel has one; a buffer export for MemChannel, with a Tracker); a
 * record received becomes an object of the receiving interpreter
 * (looked up in its identity table first when the channel keeps
 * identity).  tps_obj_send() and tps_obj_recv() move one item through
 * the channel core (chancore.c); handle_io.c calls them.
 */
#include "channel.h"
#include "item.h"

/* A record of pickle.dumps(obj), marked as a pickled copy, or NULL. */
static TpShare_Record *
pickled_record(PyObject *obj)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        return NULL;
    }
    PyObject *raw = PyObject_CallMethod(pickle, "dumps", "Oi", obj, 5);
    Py_DECREF(pickle);
    if (raw == NULL) {
        return NULL;
    }
    TpShare_Record *rec = tps_share_with(raw, tps_pickle_entry);
    Py_DECREF(raw);
    return rec;
}

int
tps_obj_immediates(PyObject *self, tps_kind k)
{
    /* Identity needs a record's serial; MemChannel carries buffers. */
    return k != TPS_KIND_MEM
           && !(tps_channel_flags(((tps_handle *)self)->ch)
                & TPS_CHAN_IDENTITY);
}

/* The record for one object sent through `self` by interpreter `owner`
 * (the current one), or NULL. */
TpShare_Record *
tps_obj_record(PyObject *self, tps_kind k, tps_module_state *state,
               PyObject *obj, int writable, int64_t owner)
{
    tps_channel *ch = ((tps_handle *)self)->ch;

    if (k == TPS_KIND_MEM) {
        if (Py_TYPE(obj) == state->BufferType) {
            /* Memory of no interpreter: a neutral record, no export. */
            return tps_share(obj);
        }
        if (!PyObject_CheckBuffer(obj)) {
            PyErr_Format(PyExc_TypeError,
                         "MemChannel.send() needs a buffer exporter "
                         "(bytes, bytearray, memoryview, array...), not "
                         "'%.200s'", Py_TYPE(obj)->tp_name);
            return NULL;
        }
        return tps_share_with(obj, writable ? tps_buffer_writable_entry
                                            : tps_buffer_entry);
    }
    unsigned int flags = tps_channel_flags(ch);
    /* With identity on, every immutable object of the message, at any
     * depth, is tagged with its serial. */
    TpShare_Record *rec = tps_share_in(
        obj, owner, (flags & TPS_CHAN_IDENTITY) ? state->identity : NULL);
    if (rec == NULL) {
        if ((flags & TPS_CHAN_PICKLE)
            && PyErr_ExceptionMatches(state->NotShareableError))
        {
            PyObject *exc = PyErr_GetRaisedException();
            rec = pickled_record(obj);
            if (rec == NULL) {
                /* Neither shareable nor picklable: say both. */
                PyObject *cur = PyErr_GetRaisedException();
                PyException_SetContext(cur, exc);
                PyErr_SetRaisedException(cur);
            }
            else {
                Py_DECREF(exc);
            }
        }
        return rec;
    }
    return rec;
}

/* The received object for `rec` (borrowed; a record or an immediate
 * item).  New reference or NULL. */
PyObject *
tps_obj_rebuild(tps_kind k, tps_module_state *state, TpShare_Record *rec)
{
    PyObject *obj;
    if (tps_item_is_imm(rec)) {
        return tps_imm_rebuild(rec);
    }
    /* Records tagged by a channel with identity on (at any depth) are
     * looked up in this interpreter's identity table first. */
    obj = tps_rebuild_with_identity(rec, state->identity);
    if (obj == NULL) {
        return NULL;
    }
    if (k == TPS_KIND_MEM && Py_TYPE(obj) == state->BufferType) {
        /* MemChannel always gives a memoryview. */
        Py_SETREF(obj, PyMemoryView_FromObject(obj));
    }
    return obj;
}

/* Send `obj` (borrowed) through `self`: None, or a Tracker for a
 * MemChannel; NULL on failure with nothing queued.  `unbound`: the
 * TPS_UNBOUND_* asked for this item, 0 for the channel's. */
PyObject *
tps_obj_send(PyObject *self, PyObject *obj, int64_t timeout, int writable,
             unsigned int unbound)
{
    /* The module state is looked up only when needed: an immediate
     * item's send has no use for it. */
    tps_module_state *state = NULL;
    tps_kind k = (tps_kind)((tps_handle *)self)->kind;
    PyObject *tracker = NULL;

    tps_interp *st = tps_enter();
    if (st == NULL) {
        return NULL;
    }
    /* Ints of 63 bits, None, True, False, floats, short bytes and str: an
     * item in the ring's slot, no record (item.h); neutral, so no policy
     * applies. */
    TpShare_Record *rec = tps_obj_immediates(self, k) ? tps_imm_make(obj)
                                                      : NULL;
    if (rec == NULL) {
        state = tps_handle_state(self);
        rec = tps_obj_record(self, k, state, obj, writable,
                             tps_interp_id(st));
        if (rec == NULL) {
            return NULL;
        }
        rec->flags |= unbound << TPS_REC_UNBOUND_SHIFT;
    }
    if (k == TPS_KIND_MEM) {
        tps_tracker *t = tps_tracker_new(st);
        if (t == NULL) {
            goto error;
        }
        /* A MemChannel's records are never short (record.h). */
        assert(!(rec->flags & TPS_REC_SHORT));
        rec->tracker = t;   /* the record's reference */
        assert(state != NULL);   /* a MemChannel sends no immediates */
        tracker = tps_tracker_wrap(state, t);
        if (tracker == NULL) {
            goto error;
        }
    }
    int rc = tps_channel_send(((tps_handle *)self)->ch, &rec, 1, timeout);
    if (rc < 0) {
        tps_handle_raise(self, tps_handle_state(self), rc);
        goto error;
    }
    if (tracker != NULL) {
        return tracker;
    }
    Py_RETURN_NONE;

error:
    /* Nothing was queued: the record (and any export) go now. */
    Py_XDECREF(tracker);
    tps_item_release(rec);
    return NULL;
}

/* Receive one object from `self`.  New reference or NULL. */
PyObject *
tps_obj_recv(PyObject *self, int64_t timeout)
{
    TpShare_Record *rec;
    Py_ssize_t got;

    tps_interp *st = tps_enter();
    if (st == NULL
        || (((tps_handle *)self)->pending != NULL
            && tps_handle_raise_pending(self) < 0))
    {
        return NULL;
    }
    tps_channel *ch = ((tps_handle *)self)->ch;
    int rc = tps_channel_recv(ch, &rec, 1, &got, timeout);
    if (rc < 0) {
        return tps_handle_raise(self, tps_handle_state(self), rc);
    }
    assert(got == 1);
    /* The item is consumed whether or not it rebuilds, as with the
     * standard library's queues: one that cannot be rebuilt here raises
     * once, and never blocks those behind it.  An immediate item needs
     * neither the module state nor the handle's kind (looked up only for
     * a record: the lookup is a third of what an int's receive costs in
     * this layer). */
    PyObject *obj;
    if (tps_item_is_imm(rec)) {
        obj = tps_imm_rebuild(rec);
    }
    else {
        obj = tps_obj_rebuild((tps_kind)((tps_handle *)self)->kind,
                              tps_handle_state(self), rec);
    }
    tps_item_queue_release(rec);
    return obj;
}
