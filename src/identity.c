/* identity.c - identity across messages (DESIGN.md D9).
 *
 * Sending the same object twice to the same interpreter yields the same
 * received object while the receiver holds it.  Two bounded tables make
 * that safe:
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
 * So a serial never names two different objects, and a stale object is
 * never handed back.  Only values that can never change are tracked
 * (built-in immutable kinds, tuples of them, and third-party types whose
 * hooks carry TPSHARE_IMMUTABLE): reusing a rebuilt mutable object would
 * hide the sender's later changes.  Both tables belong to one interpreter
 * (module state) and are used under its GIL.
 */
#include "tpshare_internal.h"
#include "ptrmap.h"

#define RING_MAX 1024
#define RECV_MAX 4096

struct tps_identity {
    /* Sender side. */
    ptrmap sent;                 /* obj -> serial */
    struct {
        PyObject *obj;           /* strong reference */
    } ring[RING_MAX];
    size_t ring_head, ring_count;
    /* Receiver side. */
    ptrmap byserial;             /* serial -> obj (strong reference) */
    ptrmap origin;               /* obj -> sender's id() */
};

static atomic_uint_fast64_t next_serial = 16;  /* 0-2 reserved by ptrmap */

#define KEY(serial) ((void *)(uintptr_t)(serial))

tps_identity *
tps_identity_new(void)
{
    tps_identity *id = PyMem_RawCalloc(1, sizeof(tps_identity));
    if (id == NULL) {
        PyErr_NoMemory();
    }
    return id;
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
        Py_DECREF((PyObject *)s->value);
    }
    ptrmap_clear(&id->sent);
    ptrmap_clear(&id->byserial);
    ptrmap_clear(&id->origin);
    PyMem_RawFree(id);
}

int
tps_identity_tag(tps_identity *id, TpShare_Record *rec, PyObject *obj)
{
    int found;
    void *serial = ptrmap_get(&id->sent, obj, &found);
    if (!found) {
        if (id->ring_count == RING_MAX) {
            PyObject *old = id->ring[id->ring_head].obj;
            id->ring_head = (id->ring_head + 1) % RING_MAX;
            id->ring_count--;
            ptrmap_del(&id->sent, old);
            Py_DECREF(old);
        }
        serial = KEY(atomic_fetch_add(&next_serial, 1));
        if (ptrmap_set(&id->sent, obj, serial) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        id->ring[(id->ring_head + id->ring_count) % RING_MAX].obj =
            Py_NewRef(obj);
        id->ring_count++;
    }
    rec->serial = (uint64_t)(uintptr_t)serial;
    rec->origin = (uintptr_t)obj;
    return 0;
}

PyObject *
tps_identity_lookup(tps_identity *id, TpShare_Record *rec)
{
    int found;
    PyObject *obj = ptrmap_get(&id->byserial, KEY(rec->serial), &found);
    return found ? Py_NewRef(obj) : NULL;
}

/* Evict what only the cache still holds. */
static void
sweep(tps_identity *id)
{
    PTRMAP_FOREACH(&id->byserial, s) {
        PyObject *obj = s->value;
        if (Py_REFCNT(obj) == 1) {
            ptrmap_del(&id->origin, obj);
            s->key = PTRMAP_TOMBSTONE;
            s->value = NULL;
            id->byserial.used--;
            Py_DECREF(obj);
        }
    }
}

void
tps_identity_remember(tps_identity *id, TpShare_Record *rec, PyObject *obj)
{
    if (id->byserial.used >= RECV_MAX) {
        sweep(id);
        if (id->byserial.used >= RECV_MAX) {
            return;   /* all held by the receiver: just not remembered */
        }
    }
    if (ptrmap_set(&id->byserial, KEY(rec->serial), obj) < 0) {
        return;       /* out of memory: identity is lost, nothing else */
    }
    if (ptrmap_set(&id->origin, obj, (void *)rec->origin) < 0) {
        ptrmap_del(&id->byserial, KEY(rec->serial));
        return;
    }
    Py_INCREF(obj);
}

Py_ssize_t
tps_identity_origin(tps_identity *id, PyObject *obj)
{
    int found;
    void *origin = ptrmap_get(&id->origin, obj, &found);
    return found ? (Py_ssize_t)(uintptr_t)origin : -1;
}
