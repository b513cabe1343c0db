/* compat.h - every difference between the supported CPython versions.
 *
 * tpshare supports CPython 3.12 and 3.13.  Each place where the two differ
 * (a private function renamed, a public one added) is wrapped here under a
 * tps_ name, so no other file tests PY_VERSION_HEX.  A 3.14 port is a
 * change of this file.
 */
#ifndef TPSHARE_COMPAT_H
#define TPSHARE_COMPAT_H

#ifndef TPSHARE_BUILD_CORE
#error "compat.h is internal to tpshare; include tpshare.h instead"
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
