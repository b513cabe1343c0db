/* not_shareable.c - the error a share raises for an object no
 * registration accepts: the interpreter's tpshare.NotShareableError.
 *
 * Part of the record layer (record.c raises it): it finds the class
 * through the owner layer's per-interpreter state, so records call
 * nothing above them.
 */
#include "record.h"
#include "owner.h"

#include <stdarg.h>

void
tps_set_not_shareable(const char *format, ...)
{
    va_list vargs;
    assert(!PyErr_Occurred());
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        return;     /* its error (MemoryError, ...) is raised instead */
    }
    tps_module_state *state = tps_interp_module_state(st);
    PyObject *exc_type = PyExc_TypeError;
    if (state != NULL) {
        exc_type = state->NotShareableError;
    }
    else {
        /* No tpshare module here (any more): raise its base, TypeError,
         * instead of the RuntimeError that says so. */
        assert(PyErr_ExceptionMatches(PyExc_RuntimeError));
        PyErr_Clear();
    }
    va_start(vargs, format);
    PyObject *msg = PyUnicode_FromFormatV(format, vargs);
    va_end(vargs);
    if (msg != NULL) {
        PyErr_SetObject(exc_type, msg);
        Py_DECREF(msg);
    }
}
