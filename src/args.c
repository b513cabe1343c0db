/* args.c - the keyword parser of the channel handles' hot methods
 * (send, recv, put, get...): vectorcall arguments matched by name
 * without building the dict and format string PyArg's parser needs.
 * Used by handle_io.c; declared in channel.h.
 */
#include "channel.h"

/* Keyword parsing for the hot methods, without PyArg's overhead.
 * Positional parameters fill pos[0..npos_max); keyword-only ones (names
 * in kwlist) fill kw[].  Unset slots stay NULL.  Returns 0 or -1. */
int
tps_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, Py_ssize_t npos_min, Py_ssize_t npos_max,
               const char *const *posnames, PyObject **pos,
               const char *const *kwlist, PyObject **kw)
{
    if (nargs < npos_min || nargs > npos_max) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd positional "
                     "arguments but %zd were given", fname, npos_min,
                     npos_max, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        pos[i] = args[i];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int matched = 0;
        for (int j = 0; kwlist && kwlist[j]; j++) {
            if (tps_unicode_equal_ascii(name, kwlist[j])) {
                kw[j] = args[nargs + i];
                matched = 1;
            }
        }
        for (Py_ssize_t j = nargs; !matched && posnames && j < npos_max; j++) {
            if (tps_unicode_equal_ascii(name, posnames[j])) {
                pos[j] = args[nargs + i];
                matched = 1;
            }
        }
        if (!matched) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument %R",
                         fname, name);
            return -1;
        }
    }
    for (Py_ssize_t j = 0; j < npos_min; j++) {
        if (pos[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing argument '%s'",
                         fname, posnames[j]);
            return -1;
        }
    }
    return 0;
}
