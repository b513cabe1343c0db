/* interpreter.c - the functions of tpshare._tpshare that create, run,
 * interrupt and end interpreters: _interp_start, _interp_run,
 * _interp_interrupt, _interp_abandon, _interp_end and _interp_list,
 * called by tpshare/_interpreters.py (the Python half of
 * tpshare.Interpreter).  They work on the process-wide table of
 * interpreters and the threads of workers.c (workers.h): entries are
 * looked up by interpreter ID and held with a reference while a call
 * waits with the table lock released.
 */
#include "tpshare_internal.h"
#include "waiter.h"
#include "workers.h"

/* ---------------------------------------------------------------------
 * Python functions of tpshare._tpshare (used by tpshare._interpreters).
 */

/* The listed entry for the interpreter ID `idobj` (borrowed, an int),
 * with a new reference that the caller drops with put_worker() or
 * tps_worker_unref_locked(); NULL with ValueError when there is none. */
static tps_worker *
get_worker(PyObject *idobj)
{
    long long id = PyLong_AsLongLong(idobj);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    pthread_mutex_lock(&tps_workers.mutex);
    tps_worker *w = tps_worker_find_locked(id);
    if (w != NULL) {
        w->refs++;
    }
    pthread_mutex_unlock(&tps_workers.mutex);
    if (w == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "no interpreter %lld made by tpshare is alive", id);
    }
    return w;
}

static void
put_worker(tps_worker *w)
{
    pthread_mutex_lock(&tps_workers.mutex);
    tps_worker_unref_locked(w);
    pthread_mutex_unlock(&tps_workers.mutex);
}

PyDoc_STRVAR(interp_start_doc,
"_interp_start(init, loop=None, /)\n--\n\n"
"Create an isolated interpreter (own GIL and allocator) and run the\n"
"source code `init` in its __main__; return its ID.  With `loop`, the\n"
"interpreter gets an OS thread of its own, which runs `loop` after\n"
"`init` and ends the interpreter when `loop` returns.  Without it, the\n"
"interpreter runs code only through _interp_run() in the caller's\n"
"thread.  Raises RuntimeError with the remote traceback text when the\n"
"interpreter cannot be created or `init` raises (it is then ended).");

static PyObject *
interp_start(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *init, *loop = NULL;
    tps_worker *w = NULL;
    PyObject *res = NULL;

    if (tps_enter() == NULL
        || !PyArg_ParseTuple(args, "s|z:_interp_start", &init, &loop))
    {
        return NULL;
    }
    w = tps_worker_new(loop != NULL);
    if (w == NULL
        || (w->init = tps_raw_strdup(init)) == NULL
        || (loop != NULL && (w->loop = tps_raw_strdup(loop)) == NULL))
    {
        PyErr_NoMemory();
        goto finally;
    }

    if (loop == NULL) {
        if (tps_worker_start_here(w) < 0) {
            goto failed;
        }
        res = PyLong_FromLongLong(w->id);
        goto finally;
    }

    /* The waiter first: once the thread runs, this must wait for it. */
    tps_waiter *me = tps_waiter_self();
    if (me == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto finally;
    }
    int err = tps_worker_start_thread(w);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_RuntimeError);
        goto finally;
    }
    /* Creating an interpreter and importing tpshare in it takes some
     * milliseconds; the wait is not cut short by signals (a handler runs
     * when this returns), so the thread is never left unaccounted. */
    PyThreadState *save = PyEval_SaveThread();
    pthread_mutex_lock(&tps_workers.mutex);
    while (w->state == TPS_W_STARTING) {
        tps_worker_park_locked(w, me, -1);
    }
    tps_wstate state = w->state;
    pthread_mutex_unlock(&tps_workers.mutex);
    if (state == TPS_W_FAILED) {
        pthread_join(w->thread, NULL);
    }
    PyEval_RestoreThread(save);
    if (state != TPS_W_FAILED) {
        res = PyLong_FromLongLong(w->id);
        goto finally;
    }

failed:
    PyErr_Format(PyExc_RuntimeError, "the new interpreter failed to start:"
                 "\n%s", w->error ? w->error : "(out of memory)");

finally:
    if (w != NULL) {
        put_worker(w);
    }
    return res;
}

PyDoc_STRVAR(interp_run_doc,
"_interp_run(id, code, /)\n--\n\n"
"Run source code in the __main__ of interpreter `id` (started without\n"
"a loop) in the calling thread, switching to a fresh thread state of\n"
"that interpreter and back.  Raises RuntimeError with the remote\n"
"traceback text if the code raises.");

static PyObject *
interp_run(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *idobj;
    const char *code;
    char *error = NULL;

    if (tps_enter() == NULL
        || !PyArg_ParseTuple(args, "Os:_interp_run", &idobj, &code))
    {
        return NULL;
    }
    tps_worker *w = get_worker(idobj);
    if (w == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&tps_workers.mutex);
    int ok = !w->threaded && w->state == TPS_W_RUNNING;
    if (ok) {
        w->running++;
    }
    pthread_mutex_unlock(&tps_workers.mutex);
    if (!ok) {
        PyErr_Format(PyExc_RuntimeError, w->threaded
                     ? "interpreter %lld runs in its own thread"
                     : "interpreter %lld is ending", (long long)w->id);
        put_worker(w);
        return NULL;
    }

    /* Found while the caller's GIL is held (the lookup reports errors on
     * the current thread state); alive while `running` counts us. */
    int rc = -1;
    PyInterpreterState *interp = tps_interp_lookup(w->id);
    if (interp != NULL) {
        rc = tps_worker_run_here(interp, code, &error);
    }
    else if (!PyErr_Occurred()) {
        error = tps_raw_strdup("the interpreter was destroyed by other code");
    }

    pthread_mutex_lock(&tps_workers.mutex);
    if (--w->running == 0) {
        tps_wlist_wake_all(&w->waiters);
    }
    int64_t id = w->id;
    tps_worker_unref_locked(w);
    pthread_mutex_unlock(&tps_workers.mutex);
    if (rc < 0) {
        /* Unless the lookup itself failed, tps_worker_run_here() left
         * no exception set: the remote one is in `error`. */
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError, "in interpreter %lld:\n%s",
                         (long long)id, error ? error : "(out of memory)");
        }
        PyMem_RawFree(error);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_interrupt_doc,
"_interp_interrupt(id, /)\n--\n\n"
"Ask interpreter `id` to raise SystemExit in the code it runs, at its\n"
"next bytecode boundary (used at process exit; call again until it\n"
"ends, since a weakref callback or __del__ swallows the exception;\n"
"a request not yet run is not queued twice), and end its tpshare\n"
"waits: a channel wait or Tracker.wait() in it raises ChannelClosed,\n"
"now or when it would park.  Another call blocked in C (a sleep) is\n"
"interrupted only when it returns.  Returns True if the request was\n"
"queued.");

static PyObject *
interp_interrupt(PyObject *Py_UNUSED(module), PyObject *idobj)
{
    tps_worker *w = tps_enter() ? get_worker(idobj) : NULL;
    if (w == NULL) {
        return NULL;
    }
    int queued = 0;
    pthread_mutex_lock(&tps_workers.mutex);
    assert(w->refs > 1);   /* the table's and ours */
    int64_t id = w->id;
    if (w->state == TPS_W_RUNNING && w->running > 0 && w->interrupt) {
        queued = 1;     /* the last request has not run yet */
    }
    else if (w->state == TPS_W_RUNNING && w->running > 0) {
        /* It cannot end while the lock is held with TPS_W_RUNNING. */
        PyInterpreterState *interp = tps_interp_lookup(w->id);
        if (interp != NULL
            && tps_add_pending_call(interp, tps_worker_interrupt_call,
                                    (void *)(intptr_t)w->id) == 0)
        {
            w->interrupt = 1;
            queued = 1;
        }
    }
    tps_worker_unref_locked(w);
    pthread_mutex_unlock(&tps_workers.mutex);
    if (PyErr_Occurred()) {
        return NULL;    /* the lookup failed (not: found no interpreter) */
    }
    /* Code parked in a tpshare wait never reaches the pending call: the
     * interpreter's waits fail from now on, and every parked waiter
     * wakes to see it. */
    if (tps_interp_stop(id) == 0) {
        tps_channels_wake_all();
    }
    return PyBool_FromLong(queued);
}

PyDoc_STRVAR(interp_abandon_doc,
"_interp_abandon(id, /)\n--\n\n"
"At process exit: when interpreter `id` stops, leave it to the runtime\n"
"instead of ending it (other interpreters still hold views of its\n"
"memory, and ending it would wait for them).");

static PyObject *
interp_abandon(PyObject *Py_UNUSED(module), PyObject *idobj)
{
    tps_worker *w = tps_enter() ? get_worker(idobj) : NULL;
    if (w == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&tps_workers.mutex);
    w->abandon = 1;
    tps_worker_unref_locked(w);
    pthread_mutex_unlock(&tps_workers.mutex);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_end_doc,
"_interp_end(id, timeout=None, /)\n--\n\n"
"Wait for interpreter `id` to end and forget it.  A threaded one ends\n"
"by itself when its loop returns (close its work channel first); this\n"
"waits for its thread.  One without a thread is ended here, once no\n"
"thread runs code in it.  Returns False if `timeout` seconds passed\n"
"first (call again later), True once it is gone.  Ctrl-C interrupts\n"
"the wait.");

static PyObject *
interp_end(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *idobj, *timeout_obj = Py_None;
    int64_t timeout_ns;

    if (tps_enter() == NULL
        || !PyArg_ParseTuple(args, "O|O:_interp_end", &idobj, &timeout_obj)
        || tps_parse_timeout(timeout_obj, &timeout_ns) < 0)
    {
        return NULL;
    }
    tps_waiter *me = tps_waiter_self();
    if (me == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    tps_worker *w = get_worker(idobj);
    if (w == NULL) {
        return NULL;
    }
    int64_t deadline = timeout_ns < 0 ? -1 : tps_now_ns() + timeout_ns;
    int done = 0, failed = 0, end_it_here = 0, join = 0;
    PyThreadState *save = PyEval_SaveThread();
    pthread_mutex_lock(&tps_workers.mutex);
    for (;;) {
        if (!w->listed) {
            done = 1;   /* another caller finished the job */
            break;
        }
        if (w->threaded && w->state == TPS_W_DONE) {
            tps_worker_remove_locked(w);
            done = join = 1;
            break;
        }
        if (!w->threaded && w->running == 0) {
            if (w->state == TPS_W_RUNNING) {
                tps_worker_set_state_locked(w, TPS_W_ENDING);
                end_it_here = !w->abandon;
                done = 1;
                break;
            }
        }
        if (deadline >= 0 && tps_now_ns() >= deadline) {
            break;
        }
        if (tps_worker_park_locked(w, me, deadline) == TPS_PARK_SIGNAL) {
            pthread_mutex_unlock(&tps_workers.mutex);
            PyEval_RestoreThread(save);
            if (PyErr_CheckSignals() < 0) {
                failed = 1;
            }
            save = PyEval_SaveThread();
            pthread_mutex_lock(&tps_workers.mutex);
            if (failed) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&tps_workers.mutex);
    if (join) {
        pthread_join(w->thread, NULL);
    }
    PyEval_RestoreThread(save);

    if (end_it_here && tps_worker_end_here(w) < 0) {
        failed = 1;
    }
    if (done && !w->threaded) {
        pthread_mutex_lock(&tps_workers.mutex);
        tps_worker_set_state_locked(w, TPS_W_DONE);
        tps_worker_remove_locked(w);
        pthread_mutex_unlock(&tps_workers.mutex);
    }
    put_worker(w);
    if (failed) {
        return NULL;
    }
    return PyBool_FromLong(done);
}

PyDoc_STRVAR(interp_list_doc,
"_interp_list()\n--\n\n"
"The IDs of the interpreters made by tpshare that are not yet ended\n"
"and forgotten, in the whole process.");

static PyObject *
interp_list(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (tps_enter() == NULL) {
        return NULL;
    }
    PyObject *res = PyList_New(0);
    if (res == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&tps_workers.mutex);
    size_t n = 0;
    for (tps_worker *w = tps_workers.list; w != NULL; w = w->next) {
        n++;
    }
    int64_t *ids = PyMem_RawMalloc((n + 1) * sizeof(int64_t));
    if (ids != NULL) {
        n = 0;
        for (tps_worker *w = tps_workers.list; w != NULL; w = w->next) {
            ids[n++] = w->id;
        }
    }
    pthread_mutex_unlock(&tps_workers.mutex);
    if (ids == NULL) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    for (size_t i = n; i-- > 0;) {
        PyObject *id = PyLong_FromLongLong(ids[i]);
        if (id == NULL || PyList_Append(res, id) < 0) {
            Py_XDECREF(id);
            Py_CLEAR(res);
            break;
        }
        Py_DECREF(id);
    }
    PyMem_RawFree(ids);
    return res;
}

static PyMethodDef interpreter_functions[] = {
    {"_interp_start", interp_start, METH_VARARGS, interp_start_doc},
    {"_interp_run", interp_run, METH_VARARGS, interp_run_doc},
    {"_interp_interrupt", interp_interrupt, METH_O, interp_interrupt_doc},
    {"_interp_abandon", interp_abandon, METH_O, interp_abandon_doc},
    {"_interp_end", interp_end, METH_VARARGS, interp_end_doc},
    {"_interp_list", interp_list, METH_NOARGS, interp_list_doc},
    {NULL},
};

int
tps_interpreters_init(PyObject *module)
{
    return PyModule_AddFunctions(module, interpreter_functions);
}
