/* identity.c - identity across messages.
 *
 * Sending the same object twice to the same interpreter yields the same
 * received object while the receiver holds it, wherever the object sits
 * in the messages (at the top, inside a tuple, inside a tuple inside a
 * registered type): every record of an immutable object carries its
 * serial (record.c tags and looks up at every depth).  Two bounded tables
 * make that safe:
 *
 *   - the SENDER keeps the last RING_MAX objects it sent in a ring,
 *     holding a strong reference to each, and gives each a serial number
 *     unique in the process.  While an object is in the ring it cannot die,
 *     so its address cannot be reused: an address seen again is the same
 *     object, and gets the same serial.  Once evicted, the object may die
 *     and a new one may take its address, but that one gets a new serial;
 *   - the RECEIVER maps serials to the objects it rebuilt for them
 *     (strong references), and received objects to the sender's id().
 *     When full it evicts the entries only it still holds (refcount 1).
 *
 * Both sides are bounded in count and in bytes kept alive (objects whose
 * data is 64 KiB or more are not tracked at all).
 *
 * So a serial never names two different objects, and a stale object is
 * never handed back.  Only values that can never change are tracked
 * (built-in immutable kinds, tuples of them, and third-party types whose
 * hooks carry TPSHARE_IMMUTABLE; owner-bound ones only when the receiver
 * gets a copy, such as large bytes): reusing a rebuilt mutable object
 * would hide the sender's later changes.  Both tables belong to one
 * interpreter (module state) and are used under its GIL.
 */
#include "identity.h"
#include "ptrmap.h"
#include "record.h"

#define RING_MAX 1024
#define RECV_MAX 4096
/* Memory kept alive for identity is bounded too: objects whose data is
 * estimated at OBJ_MAX bytes or more are not tracked, and each side keeps
 * at most its byte budget of them. */
#define OBJ_MAX (64 * 1024)
#define RING_BYTES (8 * 1024 * 1024)
#define RECV_BYTES (16 * 1024 * 1024)

typedef struct {
    PyObject *obj;               /* strong reference */
    size_t size;
    uintptr_t origin;            /* the sender's id() */
} received;

struct tps_identity {
    /* Sender side. */
    ptrmap sent;                 /* obj -> serial */
    struct {
        PyObject *obj;           /* strong reference */
        size_t size;
    } ring[RING_MAX];
    size_t ring_head, ring_count, ring_bytes;
    /* Receiver side. */
    ptrmap byserial;             /* serial -> received (raw memory) */
    ptrmap byobj;                /* received obj -> received */
    size_t recv_bytes;
    size_t sweep_at;             /* next sweep's first byserial slot */
};

static atomic_uint_fast64_t next_serial = 16;  /* 0-2 reserved by ptrmap */

#define KEY(serial) ((void *)(uintptr_t)(serial))

/* A rough size of an immutable value's data (characters, bytes, digits;
 * for a tuple a pointer per item plus the items; for anything else its
 * fixed size), or OBJ_MAX + 1 once it is past the limit (so deep or wide
 * values stop the walk early).  Object headers are left out so that the
 * limit is on the data alone: bytes of OBJ_MAX - 1 are tracked, bytes of
 * OBJ_MAX are not, whatever the size of a bytes object's header. */
static size_t
approx_size(PyObject *obj, int depth)
{
    size_t size = 0;
    if (PyUnicode_CheckExact(obj)) {
        size = (size_t)PyUnicode_GET_LENGTH(obj) * PyUnicode_KIND(obj);
    }
    else if (PyBytes_CheckExact(obj)) {
        size = (size_t)PyBytes_GET_SIZE(obj);
    }
    else if (PyLong_CheckExact(obj)) {
        size = _PyLong_NumBits(obj) / 8;
    }
    else if (PyTuple_CheckExact(obj)) {
        if (depth > 8) {
            return OBJ_MAX + 1;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); i++) {
            size += sizeof(PyObject *)
                    + approx_size(PyTuple_GET_ITEM(obj, i), depth + 1);
            if (size > OBJ_MAX) {
                return OBJ_MAX + 1;
            }
        }
    }
    else {
        size = (size_t)Py_TYPE(obj)->tp_basicsize;
    }
    return size;
}

/* Whether `obj` rebuilds as the very object all interpreters share (the
 * empty str, bytes and tuple, the one-byte bytes): nothing to track, and a
 * receiver would otherwise keep it, immortal, under several serials. */
static int
process_singleton(PyObject *obj)
{
    if (PyBytes_CheckExact(obj)) {
        return PyBytes_GET_SIZE(obj) <= 1;
    }
    if (PyUnicode_CheckExact(obj)) {
        return PyUnicode_GET_LENGTH(obj) == 0;
    }
    if (PyTuple_CheckExact(obj)) {
        return PyTuple_GET_SIZE(obj) == 0;
    }
    return 0;
}

tps_identity *
tps_identity_new(void)
{
    tps_identity *id = PyMem_RawCalloc(1, sizeof(tps_identity));
    if (id == NULL) {
        PyErr_NoMemory();
    }
    return id;
}

static void
forget_received(tps_identity *id, received *r)
{
    ptrmap_del(&id->byobj, r->obj);
    id->recv_bytes -= r->size;
    Py_DECREF(r->obj);
    PyMem_RawFree(r);
}

void
tps_identity_free(tps_identity *id)
{
    if (id == NULL) {
        return;
    }
    for (size_t i = 0; i < id->ring_count; i++) {
        Py_DECREF(id->ring[(id->ring_head + i) % RING_MAX].obj);
    }
    PTRMAP_FOREACH(&id->byserial, s) {
        forget_received(id, s->value);
    }
    ptrmap_clear(&id->sent);
    ptrmap_clear(&id->byserial);
    ptrmap_clear(&id->byobj);
    PyMem_RawFree(id);
}

static void
sent_forget_oldest(tps_identity *id)
{
    PyObject *old = id->ring[id->ring_head].obj;
    id->ring_bytes -= id->ring[id->ring_head].size;
    id->ring_head = (id->ring_head + 1) % RING_MAX;
    id->ring_count--;
    ptrmap_del(&id->sent, old);
    Py_DECREF(old);
}

int
tps_identity_tag(tps_identity *id, TpShare_Record *rec, PyObject *obj)
{
    assert(tps_thread_state() != NULL);
    assert(!(rec->flags & TPS_REC_SHORT) && rec->serial == 0
           && (rec->flags & TPS_REC_IMMUTABLE));
    int found;
    void *serial = ptrmap_get(&id->sent, obj, &found);
    if (!found) {
        if (process_singleton(obj)) {
            return 0;
        }
        size_t size = approx_size(obj, 0);
        if (size >= OBJ_MAX) {
            return 0;   /* too big to keep alive for identity */
        }
        while (id->ring_count == RING_MAX
               || (id->ring_count && id->ring_bytes + size > RING_BYTES))
        {
            sent_forget_oldest(id);
        }
        assert(id->ring_count < RING_MAX);
        serial = KEY(atomic_fetch_add(&next_serial, 1));
        if (ptrmap_set(&id->sent, obj, serial) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        size_t slot = (id->ring_head + id->ring_count) % RING_MAX;
        id->ring[slot].obj = Py_NewRef(obj);
        id->ring[slot].size = size;
        id->ring_count++;
        id->ring_bytes += size;
    }
    rec->serial = (uint64_t)(uintptr_t)serial;
    rec->origin = (uintptr_t)obj;
    return 0;
}

PyObject *
tps_identity_lookup(tps_identity *id, TpShare_Record *rec)
{
    assert(tps_thread_state() != NULL && rec->serial != 0);
    int found;
    received *r = ptrmap_get(&id->byserial, KEY(rec->serial), &found);
    return found ? Py_NewRef(r->obj) : NULL;
}

/* Slots of the receiver's table one sweep looks at.  Walking the whole
 * table would be the cost of every message while the receiver holds more
 * tracked objects than the table takes; a step bounds it, and a table of
 * objects the receiver let go of still frees room for the next one at
 * once. */
#define SWEEP_STEP 512

/* Evict what only the cache still holds, in the next SWEEP_STEP slots
 * (round-robin over the table). */
static void
sweep(tps_identity *id)
{
    ptrmap *m = &id->byserial;
    if (m->slots == NULL) {
        return;
    }
    size_t i = id->sweep_at & m->mask;
    for (size_t n = 0; n < SWEEP_STEP && n <= m->mask; n++) {
        ptrslot *s = &m->slots[i];
        if (ptrmap_slot_used(s)) {
            received *r = s->value;
            if (Py_REFCNT(r->obj) == 1) {
                ptrmap_delete_current(m, s);
                forget_received(id, r);
            }
        }
        i = (i + 1) & m->mask;
    }
    id->sweep_at = i;
}

void
tps_identity_remember(tps_identity *id, TpShare_Record *rec, PyObject *obj)
{
    assert(tps_thread_state() != NULL && rec->serial != 0);
    int found;
    (void)ptrmap_get(&id->byobj, obj, &found);
    if (found) {
        /* A rebuild hook that hands out cached objects gave one already
         * remembered for another serial: one entry per object, so that
         * forgetting one serial cannot drop the other's entry. */
        return;
    }
    size_t size = approx_size(obj, 0);
    if (id->byserial.used >= RECV_MAX
        || id->recv_bytes + size > RECV_BYTES)
    {
        sweep(id);
        if (id->byserial.used >= RECV_MAX
            || id->recv_bytes + size > RECV_BYTES)
        {
            return;   /* all held by the receiver: just not remembered */
        }
    }
    received *r = PyMem_RawMalloc(sizeof(received));
    if (r == NULL) {
        return;       /* out of memory: identity is lost, nothing else */
    }
    r->obj = obj;
    r->size = size;
    r->origin = rec->origin;
    if (ptrmap_set(&id->byserial, KEY(rec->serial), r) < 0) {
        PyMem_RawFree(r);
        return;
    }
    if (ptrmap_set(&id->byobj, obj, r) < 0) {
        ptrmap_del(&id->byserial, KEY(rec->serial));
        PyMem_RawFree(r);
        return;
    }
    Py_INCREF(obj);
    id->recv_bytes += size;
}

Py_ssize_t
tps_identity_origin(tps_identity *id, PyObject *obj)
{
    int found;
    received *r = ptrmap_get(&id->byobj, obj, &found);
    return found ? (Py_ssize_t)r->origin : -1;
}
