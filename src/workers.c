/* workers.c - the interpreters that tpshare creates and runs: the table
 * of them, and the threads that create, run and end them.
 *
 * The C half of tpshare.Interpreter (the Python half, with the work
 * protocol, futures and pools, is src/tpshare/_interpreters.py); the
 * functions it calls are in interpreter.c.  It creates isolated
 * interpreters (own GIL, own obmalloc, only extensions that support
 * them, threads allowed) through Py_NewInterpreterFromConfig and runs
 * code in them, in one of two modes:
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
#include "workers.h"

#include <signal.h>
#include <string.h>

tps_worker_table tps_workers = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
};

/* ---------------------------------------------------------------------
 * The table.
 */

char *
tps_raw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = PyMem_RawMalloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

tps_worker *
tps_worker_new(int threaded)
{
    tps_worker *w = PyMem_RawCalloc(1, sizeof(tps_worker));
    if (w == NULL) {
        return NULL;
    }
    w->id = -1;
    w->threaded = threaded;
    w->state = TPS_W_STARTING;
    w->refs = 1;
    tps_wlist_init(&w->waiters);
    return w;
}

static void
worker_free(tps_worker *w)
{
    PyMem_RawFree(w->init);
    PyMem_RawFree(w->loop);
    PyMem_RawFree(w->error);
    PyMem_RawFree(w);
}

/* Drop one reference (table lock held); frees the entry at zero. */
void
tps_worker_unref_locked(tps_worker *w)
{
    if (--w->refs == 0) {
        assert(!w->listed && w->waiters.count == 0);
        worker_free(w);
    }
}

/* The listed entry for interpreter `id`, or NULL (table lock held). */
tps_worker *
tps_worker_find_locked(int64_t id)
{
    for (tps_worker *w = tps_workers.list; w != NULL; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

static void
worker_add_locked(tps_worker *w)
{
    w->next = tps_workers.list;
    tps_workers.list = w;
    w->listed = 1;
    w->refs++;
}

void
tps_worker_remove_locked(tps_worker *w)
{
    if (!w->listed) {
        return;
    }
    for (tps_worker **p = &tps_workers.list; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    w->listed = 0;
    tps_worker_unref_locked(w);
}

/* Set the state and wake everyone waiting on the entry (lock held). */
void
tps_worker_set_state_locked(tps_worker *w, tps_wstate state)
{
    w->state = state;
    tps_wlist_wake_all(&w->waiters);
}

/* Park the calling thread, whose waiter is `me` (set up by the caller
 * while it held its GIL), until the entry changes or `deadline_ns`
 * passes.  Called with the table lock held and no GIL; returns with the
 * lock held and a TPS_PARK_* code.  Callers re-check in a loop. */
int
tps_worker_park_locked(tps_worker *w, tps_waiter *me, int64_t deadline_ns)
{
    TPS_ASSERT_LOCKED(&tps_workers.mutex);
    assert(me != NULL && me == tps_waiter_self());
    tps_wnode node = {.waiter = me};

    tps_waiter_reset(me);
    tps_wlist_push(&w->waiters, &node);
    pthread_mutex_unlock(&tps_workers.mutex);
    int why = tps_waiter_park(me, deadline_ns);
    pthread_mutex_lock(&tps_workers.mutex);
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
        return tps_raw_strdup("(no exception was set)");
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
    out = tps_raw_strdup(bytes != NULL ? PyBytes_AS_STRING(bytes)
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
        *error = tps_raw_strdup(buf);
        *ts = NULL;
        return -1;
    }
    return PyInterpreterState_GetID(PyThreadState_GetInterpreter(*ts));
}

/* The pending call that interrupts running work at exit: raises
 * SystemExit in whatever code the interpreter runs next, unless it is
 * already ending (Py_EndInterpreter runs leftover pending calls).  The
 * argument is the interpreter ID, not the entry, which may be gone. */
int
tps_worker_interrupt_call(void *arg)
{
    int64_t id = (int64_t)(intptr_t)arg;
    int fire = 0;

    pthread_mutex_lock(&tps_workers.mutex);
    tps_worker *w = tps_worker_find_locked(id);
    if (w != NULL && w->interrupt && w->state == TPS_W_RUNNING) {
        w->interrupt = 0;
        fire = 1;
    }
    pthread_mutex_unlock(&tps_workers.mutex);
    if (fire) {
        PyErr_SetString(PyExc_SystemExit, TPS_EXIT_INTERRUPT_MESSAGE);
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
    tps_worker *w = arg;
    PyThreadState *ts = NULL;
    char *error = NULL;

    int64_t id = create_interpreter(&ts, &error);
    if (id < 0) {
        pthread_mutex_lock(&tps_workers.mutex);
        w->error = error;
        tps_worker_set_state_locked(w, TPS_W_FAILED);
        pthread_mutex_unlock(&tps_workers.mutex);
        return NULL;
    }
    if (run_in_main(w->init, &error) < 0) {
        Py_EndInterpreter(ts);
        pthread_mutex_lock(&tps_workers.mutex);
        w->id = id;
        w->error = error;
        tps_worker_set_state_locked(w, TPS_W_FAILED);
        pthread_mutex_unlock(&tps_workers.mutex);
        return NULL;
    }

    pthread_mutex_lock(&tps_workers.mutex);
    w->id = id;
    w->running = 1;
    worker_add_locked(w);
    tps_worker_set_state_locked(w, TPS_W_RUNNING);
    pthread_mutex_unlock(&tps_workers.mutex);

    /* The loop returns once its work channel is closed.  It catches
     * everything else; an exception escaping it (the interrupt at exit,
     * raised between two statements of the loop) is kept in the entry,
     * never printed. */
    run_in_main(w->loop, &error);

    pthread_mutex_lock(&tps_workers.mutex);
    if (error != NULL && w->error == NULL) {
        w->error = error;
        error = NULL;
    }
    w->running = 0;
    int abandon = w->abandon;
    tps_worker_set_state_locked(w, TPS_W_ENDING);
    pthread_mutex_unlock(&tps_workers.mutex);
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

    pthread_mutex_lock(&tps_workers.mutex);
    tps_worker_set_state_locked(w, TPS_W_DONE);
    pthread_mutex_unlock(&tps_workers.mutex);
    return NULL;
}

/* Start a thread running worker_main(w) with asynchronous signals
 * blocked.  0 or an errno value. */
int
tps_worker_start_thread(tps_worker *w)
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
 * Called with the GIL; returns with it.  0 (the entry listed, TPS_W_RUNNING)
 * or -1 with w->error set and the interpreter ended. */
int
tps_worker_start_here(tps_worker *w)
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

    pthread_mutex_lock(&tps_workers.mutex);
    w->id = id;
    w->error = error;
    if (rc == 0) {
        worker_add_locked(w);
    }
    tps_worker_set_state_locked(w, rc == 0 ? TPS_W_RUNNING : TPS_W_FAILED);
    pthread_mutex_unlock(&tps_workers.mutex);
    return rc;
}

/* Attach a new thread state of `interp` in the calling thread, run
 * `code`, and come back.  Called with the GIL of the caller's interpreter;
 * returns with it.  The caller keeps the interpreter alive (its entry is
 * TPS_W_RUNNING and counts this run in `running`).  0, or -1 with *error set
 * (raw memory). */
int
tps_worker_run_here(PyInterpreterState *interp, const char *code, char **error)
{
    PyThreadState *caller = PyEval_SaveThread();
    int rc = -1;

    PyThreadState *ts = PyThreadState_New(interp);
    if (ts == NULL) {
        *error = tps_raw_strdup("could not make a thread state for the "
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
 * and the entry TPS_W_ENDING.  Called with the caller's GIL; returns with it.
 * Returns 0 (also when other code destroyed it: its keeper went too), or
 * -1 with an exception when it could not be looked up. */
int
tps_worker_end_here(tps_worker *w)
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

void
tps_workers_atfork(tps_fork_phase phase)
{
    /* The table's mutex is not taken before the fork: code under it
     * calls into CPython (interp_interrupt), which holds its own locks
     * while it forks.  The interpreters it lists and their threads do not
     * exist in the child: the child forgets them all (their entries are
     * left as they are, not freed: the list may have been mid-update). */
    if (phase == TPS_FORK_CHILD) {
        pthread_mutex_init(&tps_workers.mutex, NULL);
        tps_workers.list = NULL;
    }
}
