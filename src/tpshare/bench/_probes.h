/* _probes.h - what _probes_copy.c gives the module table of _probes.c
 * (tpshare.bench._probes, the benchmarks' own extension). */
#ifndef TPSHARE_PROBES_H
#define TPSHARE_PROBES_H

#include <Python.h>

/* _copy_floor(size, n, pool): args borrowed; new reference to a float or
 * None, or NULL with an exception. */
PyObject *tps_probe_copy_floor(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs);
extern const char tps_probe_copy_floor_doc[];

/* _share_min(value=None): args borrowed; new reference to an int, or
 * NULL with an exception. */
PyObject *tps_probe_share_min(PyObject *module, PyObject *const *args,
                              Py_ssize_t nargs);
extern const char tps_probe_share_min_doc[];

#endif /* TPSHARE_PROBES_H */
