/* shm_batch.c - tpshare.shm.Channel's values encoded and decoded in C,
 * and its batch receive.
 *
 * A Channel carries a value as marshal data (tag 1, docs/shm.md).  The
 * Python layer marshals each item, which costs a few Python calls per
 * item; here the common small values (None, bool, an int of 32 bits, a
 * float, a short bytes or str) are written straight into the slot in
 * marshal's own format, and read back from it, so a batch of them makes
 * no Python call per item.  What is written is what marshal.dumps()
 * writes (or a form marshal.loads() reads the same), so every receiver
 * (recv(), an older one) decodes it; anything else goes to the Python
 * layer's encoder and decoder as before.
 */
#define _GNU_SOURCE
#include "shm_py.h"

#include <string.h>

#define M_HEADER 5      /* a type code and a 32-bit length */

#define TAG_VALUE 1u    /* tpshare/shm.py: _TAG_VALUE */

static void
put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static size_t
put_sized(uint8_t *dst, size_t cap, int code, const char *data, size_t n)
{
    if (n > cap - M_HEADER) {
        return 0;
    }
    dst[0] = (uint8_t)code;
    put_le32(dst + 1, (uint32_t)n);
    memcpy(dst + M_HEADER, data, n);
    return M_HEADER + n;
}

/* Write obj (borrowed) as marshal data into dst (cap bytes, at least 9).
 * Returns the length written, or 0 when obj is not one of the values
 * written here (nothing is raised: the caller encodes it otherwise). */
size_t
tps_shm_value_encode(PyObject *obj, uint8_t *dst, size_t cap)
{
    PyTypeObject *t = Py_TYPE(obj);
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        dst[0] = obj == Py_None ? M_NONE : obj == Py_True ? M_TRUE : M_FALSE;
        return 1;
    }
    if (t == &PyBytes_Type) {
        return put_sized(dst, cap, M_STRING, PyBytes_AS_STRING(obj),
                         (size_t)PyBytes_GET_SIZE(obj));
    }
    if (t == &PyLong_Type) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (overflow || v < INT32_MIN || v > INT32_MAX) {
            return 0;
        }
        dst[0] = M_INT;
        put_le32(dst + 1, (uint32_t)(int32_t)v);
        return 5;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) {
            /* A lone surrogate: marshal's own encoder handles it. */
            PyErr_Clear();
            return 0;
        }
        return put_sized(dst, cap, M_UNICODE, s, (size_t)n);
    }
    if (t == &PyFloat_Type) {
        dst[0] = M_BINARY_FLOAT;
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), (char *)dst + 1, 1) < 0) {
            PyErr_Clear();
            return 0;
        }
        return 9;
    }
    return 0;
}

/* New reference: the value of the n bytes of marshal data at p, or NULL
 * with no exception set when they are not one of the forms read here
 * (the caller reads them with marshal, which reports what is wrong). */
static PyObject *
value_decode(const uint8_t *p, size_t n)
{
    PyObject *v;
    if (n == 0) {
        return NULL;
    }
    switch (p[0] & ~M_FLAG_REF) {
    case M_NONE:
        return n == 1 ? Py_NewRef(Py_None) : NULL;
    case M_TRUE:
        return n == 1 ? Py_NewRef(Py_True) : NULL;
    case M_FALSE:
        return n == 1 ? Py_NewRef(Py_False) : NULL;
    case M_INT:
        return n == 5 ? PyLong_FromLong((int32_t)tps_shm_get_le32(p + 1)) : NULL;
    case M_BINARY_FLOAT:
        if (n != 9) {
            return NULL;
        }
        {
            double d = PyFloat_Unpack8((const char *)p + 1, 1);
            if (d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                return NULL;
            }
            return PyFloat_FromDouble(d);
        }
    case M_STRING:
        if (n < M_HEADER || tps_shm_get_le32(p + 1) != n - M_HEADER) {
            return NULL;
        }
        return PyBytes_FromStringAndSize((const char *)p + M_HEADER,
                                         (Py_ssize_t)(n - M_HEADER));
    case M_UNICODE:
        if (n < M_HEADER || tps_shm_get_le32(p + 1) != n - M_HEADER) {
            return NULL;
        }
        v = PyUnicode_DecodeUTF8((const char *)p + M_HEADER,
                                 (Py_ssize_t)(n - M_HEADER), "surrogatepass");
        if (v == NULL) {
            PyErr_Clear();
        }
        return v;
    default:
        return NULL;
    }
}

/* New reference: the object for taken slot s, decoded here when it is
 * a small value, else by decode(tag, memoryview) (the Python layer's
 * decoder).  NULL with an exception: the slot is consumed either way. */
static PyObject *
decode_slot(ShmChan *c, const tps_shm_slot *s, PyObject *decode)
{
    PyObject *mv, *res;
    if (s->tag == TAG_VALUE && s->kind == TPS_SHM_SLOT_INLINE
            && s->len <= TPS_SHM_INLINE) {
        res = value_decode(s->data, (size_t)s->len);
        if (res != NULL) {
            return res;
        }
        if (PyErr_Occurred()) {
            /* Out of memory, not bad data. */
            return NULL;
        }
    }
    mv = tps_shm_take(c, s);
    if (mv == NULL) {
        return NULL;
    }
    res = PyObject_CallFunction(decode, "IN", s->tag, mv);
    return res;
}

/* Give back the blocks of taken slots [from, to) not made into
 * objects. */
static void
give_back_slots(ShmChan *c, const tps_shm_slot *slots, Py_ssize_t from,
                Py_ssize_t to)
{
    for (Py_ssize_t i = from; i < to; i++) {
        if (slots[i].kind == TPS_SHM_SLOT_BLOCK) {
            tps_shm_release_block(c, slots[i].block, slots[i].gen,
                                  TPS_SHM_HELD);
        }
    }
}

/* Take up to max (at least 1; at most the ring's size) slots, waiting
 * for the first until deadline, into *out (PyMem_Malloc'd, the caller
 * frees it).  How many, or -1 with an exception and *out NULL. */
static Py_ssize_t
take_batch(ShmChan *c, Py_ssize_t max, int64_t deadline, tps_shm_slot **out)
{
    Py_ssize_t got;
    tps_shm_slot *slots;
    *out = NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max must be at least 1");
        return -1;
    }
    if ((uint64_t)max > c->map.nslots) {
        max = (Py_ssize_t)c->map.nslots;
    }
    slots = PyMem_Malloc(sizeof(tps_shm_slot) * (size_t)max);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    got = tps_shm_take_slots(c, slots, max, deadline);
    if (got < 0) {
        PyMem_Free(slots);
        return -1;
    }
    *out = slots;
    return got;
}

/* _recv_values(max, timeout, decode) -> (items, error, rest)
 *
 * Up to max items, waiting for the first until the timeout, decoded.
 * When item k fails to decode, items holds the k before it, error is
 * the exception and rest the (tag, memoryview) pairs taken behind it;
 * otherwise error is None and rest empty. */
PyObject *
tps_shm_recv_values(ShmChan *c, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max, got, i, j;
    PyObject *items = NULL, *rest = NULL, *exc = NULL, *res = NULL;
    int64_t deadline;
    tps_shm_slot *slots = NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_recv_values(max, timeout, decode)");
        return NULL;
    }
    max = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if ((max == -1 && PyErr_Occurred())
            || tps_shm_deadline(args[1], &deadline) < 0) {
        return NULL;
    }
    got = take_batch(c, max, deadline, &slots);
    if (got < 0) {
        return NULL;
    }
    items = PyList_New(got);
    rest = PyList_New(0);
    if (items == NULL || rest == NULL) {
        i = 0;
        goto give_back;
    }
    for (i = 0; i < got; i++) {
        PyObject *v = decode_slot(c, &slots[i], args[2]);
        if (v == NULL) {
            break;
        }
        PyList_SET_ITEM(items, i, v);
    }
    if (i < got) {
        /* Item i is consumed; the items behind it go back undecoded. */
        exc = PyErr_GetRaisedException();
        for (j = i + 1; j < got; j++) {
            PyObject *mv = tps_shm_take(c, &slots[j]), *pair;
            if (mv == NULL) {
                j++;
                goto fail_rest;
            }
            pair = Py_BuildValue("(IN)", slots[j].tag, mv);
            if (pair == NULL || PyList_Append(rest, pair) < 0) {
                Py_XDECREF(pair);
                j++;
                goto fail_rest;
            }
            Py_DECREF(pair);
        }
        if (PyList_SetSlice(items, i, got, NULL) < 0) {
            goto finally;
        }
    }
    res = PyTuple_Pack(3, items, exc ? exc : Py_None, rest);
    goto finally;
fail_rest:
    i = j;
give_back:
    give_back_slots(c, slots, i, got);
finally:
    PyMem_Free(slots);
    Py_XDECREF(items);
    Py_XDECREF(rest);
    Py_XDECREF(exc);
    return res;
}

/* recv_many(max, timeout=None, *, tagged=False) -> list */
PyObject *
tps_shm_recv_many(ShmChan *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max", "timeout", "tagged", NULL};
    Py_ssize_t max, got;
    PyObject *timeout = Py_None, *list = NULL;
    int tagged = 0;
    int64_t deadline;
    tps_shm_slot *slots;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|O$p:recv_many", kwlist,
                                     &max, &timeout, &tagged)
            || tps_shm_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    got = take_batch(c, max, deadline, &slots);
    if (got < 0) {
        return NULL;
    }
    list = PyList_New(got);
    for (Py_ssize_t i = 0; i < got; i++) {
        PyObject *mv = list ? tps_shm_take(c, &slots[i]) : NULL;
        if (mv != NULL && tagged) {
            mv = Py_BuildValue("(IN)", slots[i].tag, mv);
        }
        if (mv == NULL) {
            give_back_slots(c, slots, list ? i + 1 : i, got);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, mv);
    }
    PyMem_Free(slots);
    return list;
}
