/* racy_probe.c - a data race on purpose.
 *
 * tpshare_racy_probe.race(n) starts two threads that each add 1 to one
 * plain (non-atomic) counter n times, with no lock, and returns the
 * counter.  Under a ThreadSanitizer build the test suite calls it in a
 * child process and checks that a race is reported: proof that the
 * sanitizer run would see a race in tpshare's own code.  It takes no
 * Python object from the threads, which never touch the interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

static long counter;

static void *
bump(void *arg)
{
    long n = *(const long *)arg;
    for (long i = 0; i < n; i++) {
        counter++;
    }
    return NULL;
}

/* race(n) -> int.  args: borrowed; returns a new reference. */
static PyObject *
race(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    pthread_t a, b;

    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    counter = 0;
    Py_BEGIN_ALLOW_THREADS
    if (pthread_create(&a, NULL, bump, &n) == 0) {
        if (pthread_create(&b, NULL, bump, &n) == 0) {
            pthread_join(b, NULL);
        }
        pthread_join(a, NULL);
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(counter);
}

static PyMethodDef probe_methods[] = {
    {"race", race, METH_O,
     "race(n)\n--\n\nTwo threads add 1 to one unlocked counter n times each."},
    {NULL},
};

static PyModuleDef_Slot probe_slots[] = {
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef probe_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tpshare_racy_probe",
    .m_doc = "A deliberate data race, to check the ThreadSanitizer run.",
    .m_size = 0,
    .m_methods = probe_methods,
    .m_slots = probe_slots,
};

/* Multi-phase init: returns the static definition (no reference). */
PyMODINIT_FUNC
PyInit_tpshare_racy_probe(void)
{
    return PyModuleDef_Init(&probe_module);
}
