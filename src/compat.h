/* compat.h - every difference between the supported CPython versions.
 *
 * tpshare supports CPython 3.12 and 3.13.  Each place where the two differ
 * (a private function renamed, a public one added) is wrapped here under a
 * tps_ name, so no other file tests PY_VERSION_HEX, except cpython_xid.c,
 * the one user of CPython's private cross-interpreter data API, which
 * keeps that API's differences to itself.  A 3.14 port is a change of
 * these two files.
 */
#ifndef TPSHARE_COMPAT_H
#define TPSHARE_COMPAT_H

#ifndef TPSHARE_BUILD_CORE
#error "compat.h is internal to tpshare; include tpshare.h instead"
#endif

#ifndef __linux__
#error "tpshare supports Linux only (its threads, clocks, CPU numbering)"
#endif

#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#error "tpshare needs CPython 3.12 or newer"
#endif

/* Private but exported by libpython 3.12 and 3.13 (declared only in the
 * internal headers, so declared again here with the same signature). */
PyAPI_FUNC(PyInterpreterState *) _PyInterpreterState_LookUpID(int64_t);

#if PY_VERSION_HEX >= 0x030D0000
PyAPI_FUNC(int) _PyEval_AddPendingCall(PyInterpreterState *interp,
                                       int (*func)(void *), void *arg,
                                       int flags);
#define tps_add_pending_call(interp, func, arg) \
    _PyEval_AddPendingCall((interp), (func), (arg), 0)
#define tps_at_exit(interp, func, data) \
    PyUnstable_AtExit((interp), (func), (data))
#else
PyAPI_FUNC(int) _PyEval_AddPendingCall(PyInterpreterState *interp,
                                       int (*func)(void *), void *arg,
                                       int mainthreadonly);
#define tps_add_pending_call(interp, func, arg) \
    _PyEval_AddPendingCall((interp), (func), (arg), 0)
#define tps_at_exit(interp, func, data) \
    _Py_AtExit((interp), (func), (data))
#endif

/* The interpreter with ID `id`, or NULL when there is none: then without
 * an exception, since the lookup's own "not found" error (RuntimeError on
 * 3.12, InterpreterNotFoundError on 3.13), and only that one, is dropped;
 * any other failure leaves its exception set.  Needs the GIL and no
 * exception set (3.13's lookup raises nothing over a pending one). */
#if PY_VERSION_HEX >= 0x030D0000
PyAPI_DATA(PyObject *) PyExc_InterpreterNotFoundError;
#define TPS_EXC_INTERP_NOT_FOUND PyExc_InterpreterNotFoundError
#else
#define TPS_EXC_INTERP_NOT_FOUND PyExc_RuntimeError
#endif

static inline PyInterpreterState *
tps_interp_lookup(int64_t id)
{
    assert(!PyErr_Occurred());
    PyInterpreterState *interp = _PyInterpreterState_LookUpID(id);
    if (interp == NULL && PyErr_ExceptionMatches(TPS_EXC_INTERP_NOT_FOUND)) {
        PyErr_Clear();
    }
    return interp;
}

/* Whether the signal of a queued pending call to its interpreter's eval
 * loop can be lost.  3.12 recomputes a subinterpreter's eval breaker from
 * its parts with a plain store, at the end of every eval-breaker check in
 * threads that do not handle signals; that store can overwrite the bit a
 * thread of another interpreter just set for a new pending call, which
 * then waits until something else trips the eval breaker (another thread
 * of the interpreter asking for its GIL, the collector).  3.13 sets and
 * clears the bits atomically. */
#if PY_VERSION_HEX >= 0x030D0000
#define TPS_PENDING_SIGNAL_CAN_BE_LOST 0
#else
#define TPS_PENDING_SIGNAL_CAN_BE_LOST 1
#endif

/* The calling thread's attached thread state, or NULL (no GIL held). */
#if PY_VERSION_HEX >= 0x030D0000
#define tps_thread_state() PyThreadState_GetUnchecked()
#else
#define tps_thread_state() _PyThreadState_UncheckedGet()
#endif

/* Whether a str equals an ASCII C string. */
#if PY_VERSION_HEX >= 0x030D0000
#define tps_unicode_equal_ascii(u, s) PyUnicode_EqualToUTF8((u), (s))
#else
#define tps_unicode_equal_ascii(u, s) _PyUnicode_EqualToASCIIString((u), (s))
#endif

/* Whether the runtime (the whole process) is shutting down. */
#if PY_VERSION_HEX >= 0x030D0000
#define tps_runtime_finalizing() Py_IsFinalizing()
#else
#define tps_runtime_finalizing() _Py_IsFinalizing()
#endif

/* The version tag CPython gives `type` (borrowed), or 0 when it has no
 * valid one.  CPython zeroes the tag whenever the type, its bases, its MRO
 * or its attributes change, and draws each new tag from a counter that
 * only grows (per interpreter for mutable heap types), so a tag is never
 * given to a second type: its own attribute cache relies on that.  3.12
 * marks a valid tag with Py_TPFLAGS_VALID_VERSION_TAG (a tag can be set
 * without the flag when assigning it to a base failed); 3.13 no longer
 * sets the flag and a nonzero tag is valid. */
#if PY_VERSION_HEX >= 0x030D0000
#define tps_type_version(t) ((t)->tp_version_tag)
#else
#define tps_type_version(t) \
    (PyType_HasFeature((t), Py_TPFLAGS_VALID_VERSION_TAG) \
     ? (t)->tp_version_tag : 0u)
#endif

/* Whether the object's refcount is never written (PEP 683), so any
 * interpreter may take a reference to it.  Private in 3.12 and 3.13. */
#define tps_is_immortal(op) _Py_IsImmortal(op)

/* Thread-local storage with the initial-exec model: tpshare's few hot
 * per-thread variables are then reached without a __tls_get_addr call
 * (about 15% of a small share + rebuild otherwise). */
#if defined(__GNUC__)
#define TPS_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define TPS_TLS _Thread_local
#endif

/* Two's-complement little-endian conversion of ints of any size. */
#if PY_VERSION_HEX >= 0x030D0000
#define tps_long_as_bytes(v, buf, n) \
    _PyLong_AsByteArray((PyLongObject *)(v), (buf), (n), 1, 1, 1)
#else
#define tps_long_as_bytes(v, buf, n) \
    _PyLong_AsByteArray((PyLongObject *)(v), (buf), (n), 1, 1)
#endif
#define tps_long_from_bytes(buf, n) _PyLong_FromByteArray((buf), (n), 1, 1)

/* Module slot for free-threaded builds: tpshare keeps per-interpreter
 * caches that rely on the GIL. */
#ifdef Py_mod_gil
#define TPS_MOD_GIL_SLOT {Py_mod_gil, Py_MOD_GIL_USED},
#else
#define TPS_MOD_GIL_SLOT
#endif

#endif /* TPSHARE_COMPAT_H */
