/* immediate.c - immediate items of a channel (item.h): making them from
 * objects at send and objects from them at receive.
 *
 * Only exact types qualify (a subclass keeps its type through a record):
 * int of 63 bits, None, True, False, float, and bytes and str of up to
 * TPS_COMPACT_MAX bytes of payload.  Their values cannot change and hold
 * nothing of the sender's, so the receiver's copy is made from the slot
 * alone; the object layer (objlayer.c, handle_io.c) uses them only in
 * channels with identity off, since identity needs a record's serial.
 */
#include "channel.h"
#include "item.h"

/* The largest and smallest int an item's word holds (63 bits where a
 * word has 64). */
#define IMM_INT_MAX ((long long)(INTPTR_MAX >> 1))
#define IMM_INT_MIN ((long long)(INTPTR_MIN >> 1))

static inline TpShare_Record *
word_item(uintptr_t w)
{
    return (TpShare_Record *)w;
}

/* A compact block of `what` holding len units of nbytes bytes at `src`,
 * as an item; NULL when memory is exhausted. */
static TpShare_Record *
compact_item(int what, const void *src, Py_ssize_t len, size_t nbytes)
{
    int kind = tps_block_small_kind(sizeof(tps_compact) + nbytes);
    tps_compact *c = tps_block_alloc(kind);
    if (c == NULL) {
        return NULL;
    }
    assert(((uintptr_t)c & TPS_IMM_TAG_MASK) == 0);
    c->len = (uint32_t)len;
    c->what = (uint8_t)what;
    c->block_kind = (uint8_t)kind;
    c->unused = 0;
    memcpy(c->data, src, nbytes);
    return word_item((uintptr_t)c | TPS_IMM_TAG_COMPACT);
}

TpShare_Record *
tps_imm_make(PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (tp == &PyLong_Type) {
        if (PyUnstable_Long_IsCompact((PyLongObject *)obj)) {
            /* One digit and a sign: the common case, read directly. */
            Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)obj);
            return word_item(((uintptr_t)v << 1) | TPS_IMM_TAG_INT);
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow || v > IMM_INT_MAX || v < IMM_INT_MIN) {
            return NULL;
        }
        /* -1 is a value here: an exact int cannot fail to convert. */
        assert(!PyErr_Occurred());
        return word_item(((uintptr_t)v << 1) | TPS_IMM_TAG_INT);
    }
    if (tp == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        if (n > TPS_COMPACT_MAX) {
            return NULL;
        }
        return compact_item(TPS_COMPACT_BYTES, PyBytes_AS_STRING(obj), n,
                            (size_t)n);
    }
    if (tp == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(obj);
        int kind = PyUnicode_KIND(obj);
        size_t nbytes = (size_t)n * (size_t)kind;
        if (nbytes > TPS_COMPACT_MAX) {
            return NULL;
        }
        int what = kind == PyUnicode_1BYTE_KIND
                   ? (PyUnicode_IS_ASCII(obj) ? TPS_COMPACT_ASCII
                                              : TPS_COMPACT_LATIN1)
                   : kind == PyUnicode_2BYTE_KIND ? TPS_COMPACT_UCS2
                   : TPS_COMPACT_UCS4;
        return compact_item(what, PyUnicode_DATA(obj), n, nbytes);
    }
    if (tp == &PyFloat_Type) {
        /* Its bits as they are: -0.0 and NaN payloads come back. */
        double d = PyFloat_AS_DOUBLE(obj);
        return compact_item(TPS_COMPACT_FLOAT, &d, 1, sizeof(d));
    }
    int c = obj == Py_None ? TPS_IMM_NONE
            : obj == Py_False ? TPS_IMM_FALSE
            : obj == Py_True ? TPS_IMM_TRUE : -1;
    if (c < 0) {
        return NULL;
    }
    return word_item(((uintptr_t)c << 3) | TPS_IMM_TAG_CONST);
}

/* The str of a compact block (a copy of the sender's, in the same
 * canonical kind: the largest character the kind holds is given, which
 * picks that kind, and the characters are the sender's). */
static PyObject *
compact_str(const tps_compact *c)
{
    static const Py_UCS4 maxchar[] = {
        [TPS_COMPACT_ASCII] = 0x7f, [TPS_COMPACT_LATIN1] = 0xff,
        [TPS_COMPACT_UCS2] = 0xffff, [TPS_COMPACT_UCS4] = 0x10ffff,
    };
    assert(c->what >= TPS_COMPACT_ASCII && c->what <= TPS_COMPACT_UCS4);
    PyObject *s = PyUnicode_New((Py_ssize_t)c->len, maxchar[c->what]);
    if (s == NULL) {
        return NULL;
    }
    memcpy(PyUnicode_DATA(s), c->data,
           (size_t)c->len * (size_t)PyUnicode_KIND(s));
    return s;
}

PyObject *
tps_imm_rebuild(const TpShare_Record *it)
{
    uintptr_t w = (uintptr_t)it;
    assert(tps_item_is_imm(it));
    if (w & TPS_IMM_TAG_INT) {
        /* Arithmetic shift: the sign comes back. */
        return PyLong_FromLongLong((long long)((intptr_t)w >> 1));
    }
    tps_compact *c = tps_item_compact(it);
    if (c != NULL) {
        if (c->what == TPS_COMPACT_BYTES) {
            return PyBytes_FromStringAndSize(c->data, (Py_ssize_t)c->len);
        }
        if (c->what == TPS_COMPACT_FLOAT) {
            double d;
            memcpy(&d, c->data, sizeof(d));
            return PyFloat_FromDouble(d);
        }
        return compact_str(c);
    }
    switch (w >> 3) {
    case TPS_IMM_NONE:
        return Py_NewRef(Py_None);
    case TPS_IMM_FALSE:
        return Py_NewRef(Py_False);
    default:
        assert((w >> 3) == TPS_IMM_TRUE);
        return Py_NewRef(Py_True);
    }
}
