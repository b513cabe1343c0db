/* interpreter.c - interpreters that tpshare creates and runs.
 *
 * The C half of tpshare.Interpreter (the Python half, with the work
 * protocol, futures and pools, is src/tpshare/_interpreters.py).  It
 * creates isolated interpreters (own GIL, own obmalloc, only extensions
 * that support them, threads allowed) through Py_NewInterpreterFromConfig
 * and runs code in them, in one of two modes:
 *
 *   - threaded: a new OS thread creates the interpreter, runs `init` in
 *     its __main__, reports the outcome to the creator, runs `loop` (the
 *     worker loop, which returns when its work channel is closed), and
 *     ends the interpreter with Py_EndInterpreter;
 *   - caller-thread: the caller creates the interpreter and later runs
 *     code in it from its own thread, switching thread states (its own
 *     is detached, a fresh one of the interpreter attached for the run).
 *
 * Interpreters are created from a thread with no attached thread state in
 * both modes, so no interpreter's GIL is held while another interpreter
 * is created.  Worker threads block asynchronous signals: a Ctrl-C is
 * delivered to a thread of the main interpreter, which handles it.
 *
 * At process exit the Python layer interrupts running work (a pending
 * call that raises SystemExit in the interpreter; tpshare waits in it,
 * which would never reach the pending call, fail) and ends every
 * interpreter.  On 3.13 it may ask for one whose memory is still viewed
 * elsewhere to be *abandoned* instead: its thread leaves it, with its
 * thread state detached, to the runtime, which finalizes it after the
 * exit hooks without waiting for the views (tpshare's exit hook waits for
 * remote holders only while the process is not finalizing: an
 * interpreter is not ended while others hold views of its memory, except
 * by the runtime at exit).  3.12 aborts if an interpreter is left, so
 * there it is always ended.
 *
 * Why the table of workers is process-wide: an interpreter's thread, its
 * creator and its closer are different threads, possibly of different
 * interpreters.  Entries hold raw memory and no PyObject*; interpreters
 * are named by their runtime ID.
 */
#include "tpshare_internal.h"
#include "waiter.h"

#include <signal.h>
#include <string.h>

typedef enum {
    W_STARTING,      /* being created, `init` running */
    W_RUNNING,       /* alive: its loop runs (threaded), or idle (caller) */
    W_ENDING,        /* being ended or abandoned: nothing new may start */
    W_DONE,          /* gone (or abandoned); the thread has returned */
    W_FAILED,        /* creation or `init` failed; the thread returned */
} wstate;

typedef struct worker {
    struct worker *next;         /* in workers.list */
    int64_t id;                  /* the runtime's interpreter ID, or -1 */
    int threaded;
    pthread_t thread;            /* valid when threaded */
    wstate state;
    /* References: the table's (dropped by remove_locked) and one per API
     * call that waits with the table lock released.  Freed at zero. */
    int refs;
    int listed;
    int running;                 /* threads running code in it now */
    int abandon;                 /* leave it to the runtime at exit */
    int interrupt;               /* raise SystemExit in running code */
    /* Raw memory owned by the entry: the code the thread runs, and the
     * text of the exception that made `init` fail (or ended `loop`). */
    char *init;
    char *loop;
    char *error;
    /* Threads waiting for a change of state or of `running`. */
    tps_wlist waiters;
    /* Caller-thread mode: the interpreter's first thread state, kept
     * detached for its whole life and used to end it (each run gets a
     * fresh one).  CPython 3.12 cannot make a thread state for an
     * interpreter left with none: it reuses the preallocated first one
     * without resetting it.  Set by start_here(), then touched only by
     * end_here(), after checking by ID that the interpreter still
     * exists.  NULL in threaded mode. */
    PyThreadState *keeper;
} worker;

static struct {
    pthread_mutex_t mutex;       /* guards the list and every entry */
    worker *list;
} workers = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
};

/* ---------------------------------------------------------------------
 * The table.
 */

static char *
raw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = PyMem_RawMalloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

static worker *
worker_new(int threaded)
{
    worker *w = PyMem_RawCalloc(1, sizeof(worker));
    if (w == NULL) {
        return NULL;
    }
    w->id = -1;
    w->threaded = threaded;
    w->state = W_STARTING;
    w->refs = 1;
    tps_wlist_init(&w->waiters);
    return w;
}

static void
worker_free(worker *w)
{
    PyMem_RawFree(w->init);
    PyMem_RawFree(w->loop);
    PyMem_RawFree(w->error);
    PyMem_RawFree(w);
}

/* Drop one reference (table lock held); frees the entry at zero. */
static void
unref_locked(worker *w)
{
    if (--w->refs == 0) {
        assert(!w->listed && w->waiters.count == 0);
        worker_free(w);
    }
}

/* The listed entry for interpreter `id`, or NULL (table lock held). */
static worker *
find_locked(int64_t id)
{
    for (worker *w = workers.list; w != NULL; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

static void
add_locked(worker *w)
{
    w->next = workers.list;
    workers.list = w;
    w->listed = 1;
    w->refs++;
}

static void
remove_locked(worker *w)
{
    if (!w->listed) {
        return;
    }
    for (worker **p = &workers.list; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    w->listed = 0;
    unref_locked(w);
}

/* Set the state and wake everyone waiting on the entry (lock held). */
static void
set_state_locked(worker *w, wstate state)
{
    w->state = state;
    tps_wlist_wake_all(&w->waiters);
}

/* Park the calling thread, whose waiter is `me` (set up by the caller
 * while it held its GIL), until the entry changes or `deadline_ns`
 * passes.  Called with the table lock held and no GIL; returns with the
 * lock held and a TPS_PARK_* code.  Callers re-check in a loop. */
static int
park_locked(worker *w, tps_waiter *me, int64_t deadline_ns)
{
    TPS_ASSERT_LOCKED(&workers.mutex);
    assert(me != NULL && me == tps_waiter_self());
    tps_wnode node = {.waiter = me};

    tps_waiter_reset(me);
    tps_wlist_push(&w->waiters, &node);
    pthread_mutex_unlock(&workers.mutex);
    int why = tps_waiter_park(me, deadline_ns);
    pthread_mutex_lock(&workers.mutex);
    tps_wlist_remove(&w->waiters, &node);
    return why;
}

/* ---------------------------------------------------------------------
 * Running code inside an interpreter (its GIL held by the caller).
 */

static const PyInterpreterConfig isolated_config = {
    .use_main_obmalloc = 0,
    .allow_fork = 0,
    .allow_exec = 0,
    .allow_threads = 1,
    .allow_daemon_threads = 0,
    .check_multi_interp_extensions = 1,
    .gil = PyInterpreterConfig_OWN_GIL,
};

/* The current exception, formatted with its traceback, as raw UTF-8 that
 * the caller frees with PyMem_RawFree (NULL on memory failure).  Clears
 * the exception. */
static char *
take_error_text(void)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *mod = NULL, *lines = NULL, *text = NULL, *sep = NULL;
    PyObject *bytes = NULL;
    char *out = NULL;

    if (exc == NULL) {
        return raw_strdup("(no exception was set)");
    }
    mod = PyImport_ImportModule("traceback");
    if (mod != NULL) {
        lines = PyObject_CallMethod(mod, "format_exception", "O", exc);
    }
    if (lines != NULL && (sep = PyUnicode_FromString("")) != NULL) {
        text = PyUnicode_Join(sep, lines);
    }
    /* The clears below drop only what formatting `exc` raised (nothing
     * else is set: `exc` was taken above); the text then falls back to
     * repr(), then to a fixed message, and `exc` is still reported. */
    if (text == NULL) {
        PyErr_Clear();
        text = PyObject_Repr(exc);
    }
    if (text != NULL) {
        bytes = PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace");
    }
    PyErr_Clear();
    out = raw_strdup(bytes != NULL ? PyBytes_AS_STRING(bytes)
                                   : "(the exception could not be formatted)");
    Py_XDECREF(bytes);
    Py_XDECREF(text);
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    Py_XDECREF(exc);
    return out;
}

/* Run `code` in the current interpreter's __main__.  Returns 0, or -1
 * with *error set to the formatted exception (raw memory, or NULL on
 * memory failure); no exception is left set either way. */
static int
run_in_main(const char *code, char **error)
{
    PyObject *mainmod = NULL, *res = NULL;
    int rc = -1;

    mainmod = PyImport_ImportModule("__main__");
    if (mainmod == NULL) {
        goto finally;
    }
    PyObject *ns = PyModule_GetDict(mainmod);   /* borrowed */
    res = PyRun_String(code, Py_file_input, ns, ns);
    if (res == NULL) {
        goto finally;
    }
    rc = 0;

finally:
    if (rc < 0) {
        *error = take_error_text();
    }
    Py_XDECREF(res);
    Py_XDECREF(mainmod);
    return rc;
}

/* Create an isolated interpreter from a thread with no attached thread
 * state.  On success *ts is its first thread state, attached (its GIL
 * held) and the ID is returned; on failure -1 with *error set (raw
 * memory). */
static int64_t
create_interpreter(PyThreadState **ts, char **error)
{
    PyStatus status = Py_NewInterpreterFromConfig(ts, &isolated_config);
    if (PyStatus_Exception(status) || *ts == NULL) {
        char buf[256];
        PyOS_snprintf(buf, sizeof(buf), "could not create an interpreter: "
                      "%s", status.err_msg ? status.err_msg : "out of memory");
        *error = raw_strdup(buf);
        *ts = NULL;
        return -1;
    }
    return PyInterpreterState_GetID(PyThreadState_GetInterpreter(*ts));
}

/* The pending call that interrupts running work at exit: raises
 * SystemExit in whatever code the interpreter runs next, unless it is
 * already ending (Py_EndInterpreter runs leftover pending calls).  The
 * argument is the interpreter ID, not the entry, which may be gone. */
static int
interrupt_call(void *arg)
{
    int64_t id = (int64_t)(intptr_t)arg;
    int fire = 0;

    pthread_mutex_lock(&workers.mutex);
    worker *w = find_locked(id);
    if (w != NULL && w->interrupt && w->state == W_RUNNING) {
        w->interrupt = 0;
        fire = 1;
    }
    pthread_mutex_unlock(&workers.mutex);
    if (fire) {
        PyErr_SetString(PyExc_SystemExit,
                        "tpshare: interrupted because the process is "
                        "exiting");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * The threaded mode.
 */

/* The body of an interpreter's own thread. */
static void *
worker_main(void *arg)
{
    worker *w = arg;
    PyThreadState *ts = NULL;
    char *error = NULL;

    int64_t id = create_interpreter(&ts, &error);
    if (id < 0) {
        pthread_mutex_lock(&workers.mutex);
        w->error = error;
        set_state_locked(w, W_FAILED);
        pthread_mutex_unlock(&workers.mutex);
        return NULL;
    }
    if (run_in_main(w->init, &error) < 0) {
        Py_EndInterpreter(ts);
        pthread_mutex_lock(&workers.mutex);
        w->id = id;
        w->error = error;
        set_state_locked(w, W_FAILED);
        pthread_mutex_unlock(&workers.mutex);
        return NULL;
    }

    pthread_mutex_lock(&workers.mutex);
    w->id = id;
    w->running = 1;
    add_locked(w);
    set_state_locked(w, W_RUNNING);
    pthread_mutex_unlock(&workers.mutex);

    /* The loop returns once its work channel is closed.  It catches
     * everything else; an exception escaping it (the interrupt at exit,
     * raised between two statements of the loop) is kept in the entry,
     * never printed. */
    run_in_main(w->loop, &error);

    pthread_mutex_lock(&workers.mutex);
    if (error != NULL && w->error == NULL) {
        w->error = error;
        error = NULL;
    }
    w->running = 0;
    int abandon = w->abandon;
    set_state_locked(w, W_ENDING);
    pthread_mutex_unlock(&workers.mutex);
    PyMem_RawFree(error);

    if (abandon) {
        /* The process is exiting and views of this interpreter's memory
         * are still held elsewhere: leave the interpreter, with its
         * thread state detached, to the runtime, which finalizes it
         * after the exit hooks without waiting for them (3.13 only). */
        PyEval_SaveThread();
    }
    else {
        Py_EndInterpreter(ts);
    }

    pthread_mutex_lock(&workers.mutex);
    set_state_locked(w, W_DONE);
    pthread_mutex_unlock(&workers.mutex);
    return NULL;
}

/* Start a thread running worker_main(w) with asynchronous signals
 * blocked.  0 or an errno value. */
static int
start_thread(worker *w)
{
    static const int synchronous[] = {
        SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS,
    };
    sigset_t block, old;

    sigfillset(&block);
    for (size_t i = 0; i < Py_ARRAY_LENGTH(synchronous); i++) {
        sigdelset(&block, synchronous[i]);
    }
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---------------------------------------------------------------------
 * The caller-thread mode.
 */

/* Create the interpreter in the calling thread and run `init` in it.
 * Called with the GIL; returns with it.  0 (the entry listed, W_RUNNING)
 * or -1 with w->error set and the interpreter ended. */
static int
start_here(worker *w)
{
    char *error = NULL;
    PyThreadState *caller = PyEval_SaveThread();
    PyThreadState *ts = NULL;

    int64_t id = create_interpreter(&ts, &error);
    int rc = -1;
    if (id >= 0) {
        /* threading binds its idea of the main thread to the thread state
         * that imports it: let that be the keeper, not a per-run thread
         * state that is gone when the interpreter ends (3.12's
         * threading._shutdown then fails an assertion). */
        rc = run_in_main("__import__('threading')", &error);
        if (rc == 0) {
            rc = run_in_main(w->init, &error);
        }
        if (rc == 0) {
            w->keeper = PyEval_SaveThread();
        }
        else {
            Py_EndInterpreter(ts);
        }
    }
    PyEval_RestoreThread(caller);

    pthread_mutex_lock(&workers.mutex);
    w->id = id;
    w->error = error;
    if (rc == 0) {
        add_locked(w);
    }
    set_state_locked(w, rc == 0 ? W_RUNNING : W_FAILED);
    pthread_mutex_unlock(&workers.mutex);
    return rc;
}

/* Attach a new thread state of `interp` in the calling thread, run
 * `code`, and come back.  Called with the GIL of the caller's interpreter;
 * returns with it.  The caller keeps the interpreter alive (its entry is
 * W_RUNNING and counts this run in `running`).  0, or -1 with *error set
 * (raw memory). */
static int
run_here(PyInterpreterState *interp, const char *code, char **error)
{
    PyThreadState *caller = PyEval_SaveThread();
    int rc = -1;

    PyThreadState *ts = PyThreadState_New(interp);
    if (ts == NULL) {
        *error = raw_strdup("could not make a thread state for the "
                            "interpreter");
    }
    else {
        PyEval_RestoreThread(ts);
        rc = run_in_main(code, error);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
    }
    PyEval_RestoreThread(caller);
    return rc;
}

/* End the interpreter of `w` (caller-thread mode) from the calling
 * thread, through its keeper.  No other thread runs in it: `running` is 0
 * and the entry W_ENDING.  Called with the caller's GIL; returns with it.
 * Returns 0 (also when other code destroyed it: its keeper went too), or
 * -1 with an exception when it could not be looked up. */
static int
end_here(worker *w)
{
    if (tps_interp_lookup(w->id) == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyThreadState *caller = PyEval_SaveThread();
    PyEval_RestoreThread(w->keeper);
    Py_EndInterpreter(w->keeper);
    w->keeper = NULL;
    PyEval_RestoreThread(caller);
    return 0;
}

/* ---------------------------------------------------------------------
 * Python functions of tpshare._tpshare (used by tpshare._interpreters).
 */

/* The listed entry for the interpreter ID `idobj` (borrowed, an int),
 * with a new reference that the caller drops with put_worker() or
 * unref_locked(); NULL with ValueError when there is none. */
static worker *
get_worker(PyObject *idobj)
{
    long long id = PyLong_AsLongLong(idobj);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    pthread_mutex_lock(&workers.mutex);
    worker *w = find_locked(id);
    if (w != NULL) {
        w->refs++;
    }
    pthread_mutex_unlock(&workers.mutex);
    if (w == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "no interpreter %lld made by tpshare is alive", id);
    }
    return w;
}

static void
put_worker(worker *w)
{
    pthread_mutex_lock(&workers.mutex);
    unref_locked(w);
    pthread_mutex_unlock(&workers.mutex);
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
    worker *w = NULL;
    PyObject *res = NULL;

    if (tps_enter() == NULL
        || !PyArg_ParseTuple(args, "s|z:_interp_start", &init, &loop))
    {
        return NULL;
    }
    w = worker_new(loop != NULL);
    if (w == NULL
        || (w->init = raw_strdup(init)) == NULL
        || (loop != NULL && (w->loop = raw_strdup(loop)) == NULL))
    {
        PyErr_NoMemory();
        goto finally;
    }

    if (loop == NULL) {
        if (start_here(w) < 0) {
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
    int err = start_thread(w);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_RuntimeError);
        goto finally;
    }
    /* Creating an interpreter and importing tpshare in it takes some
     * milliseconds; the wait is not cut short by signals (a handler runs
     * when this returns), so the thread is never left unaccounted. */
    PyThreadState *save = PyEval_SaveThread();
    pthread_mutex_lock(&workers.mutex);
    while (w->state == W_STARTING) {
        park_locked(w, me, -1);
    }
    wstate state = w->state;
    pthread_mutex_unlock(&workers.mutex);
    if (state == W_FAILED) {
        pthread_join(w->thread, NULL);
    }
    PyEval_RestoreThread(save);
    if (state != W_FAILED) {
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
    worker *w = get_worker(idobj);
    if (w == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&workers.mutex);
    int ok = !w->threaded && w->state == W_RUNNING;
    if (ok) {
        w->running++;
    }
    pthread_mutex_unlock(&workers.mutex);
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
        rc = run_here(interp, code, &error);
    }
    else if (!PyErr_Occurred()) {
        error = raw_strdup("the interpreter was destroyed by other code");
    }

    pthread_mutex_lock(&workers.mutex);
    if (--w->running == 0) {
        tps_wlist_wake_all(&w->waiters);
    }
    int64_t id = w->id;
    unref_locked(w);
    pthread_mutex_unlock(&workers.mutex);
    if (rc < 0) {
        /* Unless the lookup itself failed, run_here() left no exception
         * set: the remote one is in `error`. */
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
"next bytecode boundary (used at process exit), and end its tpshare\n"
"waits: a channel wait or Tracker.wait() in it raises ChannelClosed,\n"
"now or when it would park.  Another call blocked in C (a sleep) is\n"
"interrupted only when it returns.  Returns True if the request was\n"
"queued.");

static PyObject *
interp_interrupt(PyObject *Py_UNUSED(module), PyObject *idobj)
{
    worker *w = tps_enter() ? get_worker(idobj) : NULL;
    if (w == NULL) {
        return NULL;
    }
    int queued = 0;
    pthread_mutex_lock(&workers.mutex);
    assert(w->refs > 1);   /* the table's and ours */
    int64_t id = w->id;
    if (w->state == W_RUNNING && w->running > 0) {
        /* It cannot end while the lock is held with W_RUNNING. */
        PyInterpreterState *interp = tps_interp_lookup(w->id);
        if (interp != NULL
            && tps_add_pending_call(interp, interrupt_call,
                                    (void *)(intptr_t)w->id) == 0)
        {
            w->interrupt = 1;
            queued = 1;
        }
    }
    unref_locked(w);
    pthread_mutex_unlock(&workers.mutex);
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
    worker *w = tps_enter() ? get_worker(idobj) : NULL;
    if (w == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&workers.mutex);
    w->abandon = 1;
    unref_locked(w);
    pthread_mutex_unlock(&workers.mutex);
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
    worker *w = get_worker(idobj);
    if (w == NULL) {
        return NULL;
    }
    int64_t deadline = timeout_ns < 0 ? -1 : tps_now_ns() + timeout_ns;
    int done = 0, failed = 0, end_it_here = 0, join = 0;
    PyThreadState *save = PyEval_SaveThread();
    pthread_mutex_lock(&workers.mutex);
    for (;;) {
        if (!w->listed) {
            done = 1;   /* another caller finished the job */
            break;
        }
        if (w->threaded && w->state == W_DONE) {
            remove_locked(w);
            done = join = 1;
            break;
        }
        if (!w->threaded && w->running == 0) {
            if (w->state == W_RUNNING) {
                set_state_locked(w, W_ENDING);
                end_it_here = !w->abandon;
                done = 1;
                break;
            }
        }
        if (deadline >= 0 && tps_now_ns() >= deadline) {
            break;
        }
        if (park_locked(w, me, deadline) == TPS_PARK_SIGNAL) {
            pthread_mutex_unlock(&workers.mutex);
            PyEval_RestoreThread(save);
            if (PyErr_CheckSignals() < 0) {
                failed = 1;
            }
            save = PyEval_SaveThread();
            pthread_mutex_lock(&workers.mutex);
            if (failed) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&workers.mutex);
    if (join) {
        pthread_join(w->thread, NULL);
    }
    PyEval_RestoreThread(save);

    if (end_it_here && end_here(w) < 0) {
        failed = 1;
    }
    if (done && !w->threaded) {
        pthread_mutex_lock(&workers.mutex);
        set_state_locked(w, W_DONE);
        remove_locked(w);
        pthread_mutex_unlock(&workers.mutex);
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
    pthread_mutex_lock(&workers.mutex);
    size_t n = 0;
    for (worker *w = workers.list; w != NULL; w = w->next) {
        n++;
    }
    int64_t *ids = PyMem_RawMalloc((n + 1) * sizeof(int64_t));
    if (ids != NULL) {
        n = 0;
        for (worker *w = workers.list; w != NULL; w = w->next) {
            ids[n++] = w->id;
        }
    }
    pthread_mutex_unlock(&workers.mutex);
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

void
tps_workers_atfork(tps_fork_phase phase)
{
    /* The table's mutex is not taken before the fork: code under it
     * calls into CPython (interp_interrupt), which holds its own locks
     * while it forks.  The interpreters it lists and their threads do not
     * exist in the child: the child forgets them all (their entries are
     * left as they are, not freed: the list may have been mid-update). */
    if (phase == TPS_FORK_CHILD) {
        pthread_mutex_init(&workers.mutex, NULL);
        workers.list = NULL;
    }
}
