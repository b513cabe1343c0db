/* handlers_scalar.c - built-in handlers for None, bool, int, float and
 * complex.
 *
 * All of them copy: the value is stored inside the record
 * (inline_data) or, for ints too large for 64 bits, as little-endian two's
 * complement bytes in raw memory.  Records made here are neutral: they
 * need no owner to be freed, and the default free (PyMem_RawFree of
 * data->ptr) is all they need.  Built-in types are matched exactly;
 * subclasses (IntEnum members, a subclass of float...) are refused so
 * that no value silently loses its type (see docs/design.md).
 */
#include "handlers.h"

#include <string.h>

/* --- None and bool: the singletons are immortal, so identity holds. --- */

static int
none_share(PyObject *Py_UNUSED(obj), TpShare_Data *Py_UNUSED(data))
{
    return 0;
}

static PyObject *
none_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *Py_UNUSED(d))
{
    Py_RETURN_NONE;
}

static int
bool_share(PyObject *obj, TpShare_Data *data)
{
    data->inline_data.i64[0] = obj == Py_True;
    return 0;
}

static PyObject *
bool_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    return PyBool_FromLong((long)data->inline_data.i64[0]);
}

/* --- int of any size. ---
 * size == 0: the value fits in int64 and sits in inline_data.i64[0].
 * size > 0: ptr holds `size` bytes, little-endian two's complement.
 * The conversion is CPython's (tps_long_as_bytes/from_bytes only hide
 * its signature change in compat.h), open to any extension: nothing of
 * tpshare's records. */

static int
int_share(PyObject *obj, TpShare_Data *data)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (!overflow) {
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        data->inline_data.i64[0] = v;
        return 0;
    }
    size_t n = _PyLong_NumBits(obj) / 8 + 1;
    unsigned char *buf = tps_handlers_api.Malloc(n);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (tps_long_as_bytes(obj, buf, n) < 0) {
        tps_handlers_api.Free(buf);
        return -1;
    }
    data->ptr = buf;
    data->size = (Py_ssize_t)n;
    return 0;
}

static PyObject *
int_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    if (data->size == 0) {
        return PyLong_FromLongLong(data->inline_data.i64[0]);
    }
    return tps_long_from_bytes(data->ptr, (size_t)data->size);
}

/* --- float and complex: bit-exact (-0.0, inf, nan payloads). --- */

static int
float_share(PyObject *obj, TpShare_Data *data)
{
    data->inline_data.f64[0] = PyFloat_AS_DOUBLE(obj);
    return 0;
}

static PyObject *
float_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    return PyFloat_FromDouble(data->inline_data.f64[0]);
}

static int
complex_share(PyObject *obj, TpShare_Data *data)
{
    Py_complex c = PyComplex_AsCComplex(obj);
    data->inline_data.f64[0] = c.real;
    data->inline_data.f64[1] = c.imag;
    return 0;
}

static PyObject *
complex_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    return PyComplex_FromDoubles(data->inline_data.f64[0],
                                 data->inline_data.f64[1]);
}

#define HOOKS(NAME, PREFIX) \
    {TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_IMMUTABLE, NAME, \
     PREFIX##_share, PREFIX##_rebuild, NULL}

static const TpShare_Hooks none_hooks = HOOKS("builtins.NoneType", none);
static const TpShare_Hooks bool_hooks = HOOKS("builtins.bool", bool);
static const TpShare_Hooks int_hooks = HOOKS("builtins.int", int);
static const TpShare_Hooks float_hooks = HOOKS("builtins.float", float);
static const TpShare_Hooks complex_hooks = HOOKS("builtins.complex",
                                                 complex);

int
tps_handlers_scalar_init(void)
{
    if (tps_handlers_api.Register(Py_TYPE(Py_None), &none_hooks, 0) < 0
        || tps_handlers_api.Register(&PyBool_Type, &bool_hooks, 0) < 0
        || tps_handlers_api.Register(&PyLong_Type, &int_hooks, 0) < 0
        || tps_handlers_api.Register(&PyFloat_Type, &float_hooks, 0) < 0
        || tps_handlers_api.Register(&PyComplex_Type, &complex_hooks, 0) < 0)
    {
        return -1;
    }
    return 0;
}
