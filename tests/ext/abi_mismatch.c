/* abi_mismatch.c - an extension built for a tpshare ABI that does not exist.
 *
 * setup.py compiles this file with TPSHARE_ABI_VERSION=999, so the
 * TpShare_IMPORT() in its Py_mod_exec finds the installed tpshare's table
 * of another version.  Importing the module must therefore fail with an
 * ImportError naming both versions; the test suite checks that it does,
 * rather than crashing on a table of the wrong layout.
 */
#include <Python.h>
#include "tpshare.h"

#if TPSHARE_ABI_VERSION != 999
#error "abi_mismatch.c must be built with -DTPSHARE_ABI_VERSION=999"
#endif

/* Py_mod_exec.  module: borrowed.  Fails with ImportError. */
static int
abi_mismatch_exec(PyObject *module)
{
    (void)module;
    return TpShare_IMPORT();
}

static PyModuleDef_Slot abi_mismatch_slots[] = {
    {Py_mod_exec, abi_mismatch_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef abi_mismatch_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tpshare_abi_mismatch",
    .m_doc = "Built for tpshare ABI version 999; importing it fails.",
    .m_size = 0,
    .m_slots = abi_mismatch_slots,
};

/* Multi-phase init (PEP 489): returns the definition, not a module;
 * the definition is static, so no reference is owned. */
PyMODINIT_FUNC
PyInit_tpshare_abi_mismatch(void)
{
    return PyModuleDef_Init(&abi_mismatch_module);
}
