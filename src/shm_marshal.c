/* shm_marshal.c - marshal data from a segment, checked before it is read.
 *
 * A tpshare.shm.Channel carries values (and a registered type's fields)
 * as marshal data.  marshal is not meant for data from a peer that may be
 * hostile: it builds code objects, sets, dicts and lists as readily as
 * ints, and a crafted code object is a way to crash the process that
 * loads it.  So the receiver walks the data first and accepts only what a
 * Channel sends: None, bool, int, float, complex, bytes, str and tuples of
 * them (and back-references, which marshal itself checks), each length
 * inside the data, nested no deeper than marshal allows.  Anything else
 * raises CorruptSegmentError before marshal sees it.  The walk reads a
 * private copy of the bytes, so a peer changing the segment meanwhile
 * cannot make what is loaded differ from what was checked.
 */
#define _GNU_SOURCE
#include "shm_py.h"

#include <marshal.h>
#include <string.h>

/* marshal's own limit on nesting (MAX_MARSHAL_STACK_DEPTH). */
#define MC_MAX_DEPTH 2000

typedef struct {
    const uint8_t *p;
    size_t left;
} mc_reader;

static int
mc_take(mc_reader *r, size_t n, const uint8_t **out)
{
    if (n > r->left) {
        return -1;
    }
    if (out != NULL) {
        *out = r->p;
    }
    r->p += n;
    r->left -= n;
    return 0;
}

static int
mc_le32(mc_reader *r, int32_t *out)
{
    const uint8_t *p;
    if (mc_take(r, 4, &p) < 0) {
        return -1;
    }
    *out = (int32_t)tps_shm_get_le32(p);
    return 0;
}

/* Skip `count` (a length read from the data) units of `unit` bytes. */
static int
mc_skip(mc_reader *r, int64_t count, size_t unit)
{
    if (count < 0 || (uint64_t)count > r->left / unit) {
        return -1;
    }
    return mc_take(r, (size_t)count * unit, NULL);
}

/* 0 when one value of an accepted kind starts at r (and r moves past
 * it), -1 otherwise. */
static int
mc_value(mc_reader *r, int depth)
{
    const uint8_t *code;
    int32_t n;
    if (depth > MC_MAX_DEPTH || mc_take(r, 1, &code) < 0) {
        return -1;
    }
    switch (*code & ~M_FLAG_REF) {
    case M_NONE:
    case M_FALSE:
    case M_TRUE:
        return 0;
    case M_INT:
    case M_REF:
        return mc_take(r, 4, NULL);
    case M_BINARY_FLOAT:
        return mc_take(r, 8, NULL);
    case M_BINARY_COMPLEX:
        return mc_take(r, 16, NULL);
    case M_LONG:
        /* A signed count of 15-bit digits, two bytes each. */
        if (mc_le32(r, &n) < 0 || n == INT32_MIN) {
            return -1;
        }
        return mc_skip(r, n < 0 ? -(int64_t)n : n, 2);
    case M_STRING:
    case M_INTERNED:
    case M_UNICODE:
    case M_ASCII:
    case M_ASCII_INTERNED:
        if (mc_le32(r, &n) < 0) {
            return -1;
        }
        return mc_skip(r, n, 1);
    case M_SHORT_ASCII:
    case M_SHORT_ASCII_INTERNED: {
        const uint8_t *len;
        if (mc_take(r, 1, &len) < 0) {
            return -1;
        }
        return mc_skip(r, *len, 1);
    }
    case M_TUPLE:
    case M_SMALL_TUPLE: {
        int64_t items;
        if ((*code & ~M_FLAG_REF) == M_SMALL_TUPLE) {
            const uint8_t *len;
            if (mc_take(r, 1, &len) < 0) {
                return -1;
            }
            items = *len;
        }
        else {
            if (mc_le32(r, &n) < 0) {
                return -1;
            }
            items = n;
        }
        /* Each item takes at least one byte. */
        if (items < 0 || (uint64_t)items > r->left) {
            return -1;
        }
        for (int64_t i = 0; i < items; i++) {
            if (mc_value(r, depth + 1) < 0) {
                return -1;
            }
        }
        return 0;
    }
    default:
        return -1;
    }
}

/* Segment._loads(buffer) -> the value of marshal data from the segment,
 * or CorruptSegmentError when it holds anything but one value of the
 * kinds a Channel sends, or does not decode.  New reference. */
PyObject *
tps_shm_loads(ShmChan *c, PyObject *arg)
{
    Py_buffer view;
    PyObject *res = NULL;
    char *copy = NULL;
    shm_state *st = tps_shm_state(c->module);
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    copy = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        goto finally;
    }
    memcpy(copy, view.buf, (size_t)view.len);
    mc_reader r = {(const uint8_t *)copy, (size_t)view.len};
    if (mc_value(&r, 0) < 0 || r.left != 0) {
        PyErr_SetString(st->CorruptSegmentError,
                        "a value in the segment is not one a Channel "
                        "sends (None, bool, int, float, complex, bytes, "
                        "str or a tuple of them)");
        goto finally;
    }
    res = PyMarshal_ReadObjectFromString(copy, view.len);
    if (res == NULL && (PyErr_ExceptionMatches(PyExc_ValueError)
                        || PyErr_ExceptionMatches(PyExc_EOFError)
                        || PyErr_ExceptionMatches(PyExc_TypeError)))
    {
        PyObject *cause = PyErr_GetRaisedException();
        PyErr_SetString(st->CorruptSegmentError,
                        "a value in the segment does not decode");
        PyObject *exc = PyErr_GetRaisedException();
        PyException_SetCause(exc, cause);        /* steals cause */
        PyErr_SetRaisedException(exc);           /* steals exc */
    }
finally:
    PyMem_Free(copy);
    PyBuffer_Release(&view);
    return res;
}
