/* tracker.c - release trackers: the sender's view of what it sent.
 *
 * MemChannel.send() attaches a tracker to the record it queues and
 * returns it as a tpshare.Tracker.  When the record is freed (every view
 * of it released, in the owner: the sender), the tracker fires: `released`
 * becomes True and threads waiting in Tracker.wait() wake up.
 *
 * Waiting parks the thread as one of its interpreter's watchers
 * (waiter.h), because the release that fires the tracker is itself a
 * request queued for this interpreter by the receiver: the watcher wakes,
 * drains the release list (which frees the record and fires the tracker)
 * and sees the result, in microseconds and without polling.
 */
#include "tracker.h"
#include "owner.h"
#include "pytypes.h"
#include "waiter.h"

struct tps_tracker {
    atomic_long refcnt;
    atomic_int released;
    tps_interp *st;              /* held: the sender's state */
};

typedef struct {
    PyObject_HEAD
    tps_tracker *t;              /* held */
} Tracker;

/* The record layer's hook: a record holding `t` was freed. */
static void
tracker_record_freed(tps_tracker *t)
{
    tps_tracker_fire(t);
    tps_tracker_decref(t);
}

tps_tracker *
tps_tracker_new(tps_interp *st)
{
    /* malloc, not calloc: glibc's calloc bypasses its per-thread cache. */
    tps_tracker *t = PyMem_RawMalloc(sizeof(tps_tracker));
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_init(&t->refcnt, 1);
    atomic_init(&t->released, 0);
    t->st = st;
    tps_interp_incref(st);
    /* Before any record can hold a tracker (the caller attaches it). */
    tps_record_set_freed_hook(tracker_record_freed);
    return t;
}

void
tps_tracker_incref(tps_tracker *t)
{
    atomic_fetch_add(&t->refcnt, 1);
}

void
tps_tracker_decref(tps_tracker *t)
{
    if (atomic_fetch_sub(&t->refcnt, 1) == 1) {
        tps_interp_decref(t->st);
        PyMem_RawFree(t);
    }
}

void
tps_tracker_fire(tps_tracker *t)
{
    atomic_store(&t->released, 1);
    tps_interp_wake_watchers(t->st);
}

/* ---------------------------------------------------------------------
 * The Python type.
 */

PyObject *
tps_tracker_wrap(tps_module_state *state, tps_tracker *t)
{
    Tracker *self = PyObject_New(Tracker, state->TrackerType);
    if (self == NULL) {
        return NULL;
    }
    tps_tracker_incref(t);
    self->t = t;
    return (PyObject *)self;
}

static void
tracker_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    tps_tracker_decref(((Tracker *)op)->t);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static PyObject *
tracker_get_released(PyObject *op, void *Py_UNUSED(closure))
{
    /* Entering drains the releases queued here: one may be this one. */
    if (tps_enter() == NULL) {
        return NULL;
    }
    return PyBool_FromLong(atomic_load(&((Tracker *)op)->t->released));
}

/* Parse a timeout: None (forever, -1), or seconds >= 0.  Returns 0, or -1
 * with ValueError/TypeError. */
int
tps_parse_timeout(PyObject *arg, int64_t *ns)
{
    if (arg == NULL || arg == Py_None) {
        *ns = -1;
        return 0;
    }
    double secs = PyFloat_AsDouble(arg);
    if (secs == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (secs != secs || secs < 0) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be None or a number >= 0, not %R", arg);
        return -1;
    }
    /* Anything beyond a century waits forever. */
    *ns = secs > 3.2e9 ? -1 : (int64_t)(secs * 1e9);
    return 0;
}

struct spin_arg {
    tps_tracker *t;
    tps_interp *st;
};

/* Released, or a release queued here that may be the one. */
static int
tracker_spin_ready(void *arg)
{
    struct spin_arg *a = arg;
    return atomic_load_explicit(&a->t->released, memory_order_relaxed)
           || tps_interp_has_pending(a->st);
}

/* wait(timeout=None): op, args and kwnames are borrowed (vectorcall; a
 * keyword's value follows the positional arguments in args).  Returns a
 * new reference to a bool, or NULL with an exception. */
static PyObject *
tracker_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    tps_tracker *t = ((Tracker *)op)->t;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    int64_t timeout_ns;

    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "wait() takes at most 1 argument");
        return NULL;
    }
    if (nkw == 1) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, 0);
        if (PyUnicode_CompareWithASCIIString(key, "timeout") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "wait() got an unexpected keyword argument %R",
                         key);
            return NULL;
        }
    }
    if (tps_parse_timeout(nargs + nkw ? args[0] : NULL, &timeout_ns) < 0) {
        return NULL;
    }
    tps_interp *st = tps_interp_current();
    if (st == NULL) {
        return NULL;
    }
    if (st != t->st) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a tracker can only be waited on in the "
                        "interpreter that sent");
        return NULL;
    }
    tps_waiter *w = tps_waiter_self();
    if (w == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int64_t deadline = timeout_ns < 0 ? -1 : tps_now_ns() + timeout_ns;
    tps_wnode node = {.waiter = w};

    for (;;) {
        tps_interp_drain(st);
        if (atomic_load(&t->released)) {
            Py_RETURN_TRUE;
        }
        if (deadline >= 0 && tps_now_ns() >= deadline) {
            Py_RETURN_FALSE;
        }
        int why, stopping;
        Py_BEGIN_ALLOW_THREADS
        /* Spin first: the release usually arrives within microseconds. */
        int64_t start = tps_now_ns();
        int64_t spin_until = start + tps_spin_window(-1);
        if (deadline >= 0 && spin_until > deadline) {
            spin_until = deadline;
        }
        struct spin_arg sa = {t, st};
        tps_spin(tracker_spin_ready, &sa, spin_until, NULL);
        tps_waiter_reset(w);
        tps_interp_tracker_waits(st, 1);
        tps_interp_watch(st, &node);
        /* Checked once watching: a stop at exit is either seen here or
         * wakes the node. */
        stopping = tps_interp_is_stopping(st);
        why = (stopping || atomic_load(&t->released)
               || tps_interp_has_pending(st))
              ? TPS_PARK_WOKEN : tps_waiter_park(w, deadline);
        tps_interp_unwatch(st, &node);
        tps_interp_tracker_waits(st, -1);
        tps_spin_learn(tps_now_ns() - start);
        Py_END_ALLOW_THREADS
        if (stopping && !atomic_load(&t->released)) {
            tps_module_state *state = tps_interp_module_state(st);
            return state ? tps_raise_error(state, TPS_ERR_EXITING) : NULL;
        }
        if (why == TPS_PARK_SIGNAL && PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

static PyObject *
tracker_repr(PyObject *op)
{
    tps_tracker *t = ((Tracker *)op)->t;
    return PyUnicode_FromFormat("<tpshare.Tracker %s>",
                                atomic_load(&t->released) ? "released"
                                                          : "outstanding");
}

static PyMethodDef tracker_methods[] = {
    {"wait", _PyCFunction_CAST(tracker_wait),
     METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nBlock until every view of what was sent "
     "is released; True if it was, False on timeout."},
    {NULL},
};

static PyGetSetDef tracker_getset[] = {
    {"released", tracker_get_released, NULL,
     "True once the receiver released everything it got from the send.",
     NULL},
    {NULL},
};

static PyType_Slot tracker_slots[] = {
    {Py_tp_dealloc, tracker_dealloc},
    {Py_tp_repr, tracker_repr},
    {Py_tp_methods, tracker_methods},
    {Py_tp_getset, tracker_getset},
    {Py_tp_doc, "Tells the sender when what it sent was released."},
    {0, NULL},
};

static PyType_Spec tracker_spec = {
    .name = "tpshare.Tracker",
    .basicsize = sizeof(Tracker),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tracker_slots,
};

int
tps_tracker_init_type(PyObject *module, tps_module_state *state)
{
    state->TrackerType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &tracker_spec, NULL);
    if (state->TrackerType == NULL) {
        return -1;
    }
    return PyModule_AddType(module, state->TrackerType);
}
