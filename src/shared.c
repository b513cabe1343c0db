/* shared.c - tpshare.Shared, a share record seen from Python, and the
 * process-wide table of detached records.
 *
 * tpshare.share(obj) makes a record and wraps it in a Shared.  A Shared
 * can rebuild its value (in its own interpreter, any number of times),
 * release the record early, or be detached: detach() hands the record to
 * a process-wide table and returns an integer token that any interpreter
 * passes to tpshare.attach() to take it out again, exactly once.  This is
 * the smallest transport between interpreters; channels are the real
 * one.
 *
 * Why the token table is process-wide: tokens cross interpreters.  It
 * holds records (raw memory), no PyObject*.  Records left in it when
 * their owner exits are released by the owner's exit hook.  An
 * owner-bound record in the table is counted in its owner's `queued`
 * until the Shared made by attach() holds it, so the owner does not end
 * while attach() is taking it.
 */
#include "pytypes.h"
#include "fork.h"
#include "owner.h"
#include "ptrmap.h"
#include "record.h"

typedef struct {
    PyObject_HEAD
    TpShare_Record *rec;     /* held (tps_record_hold), NULL once released */
    int64_t holder;          /* the interpreter this object lives in */
} Shared;

/* ---------------------------------------------------------------------
 * The token table.
 */

static struct {
    pthread_mutex_t mutex;
    ptrmap records;          /* token -> record (holds a reference) */
    uint64_t next_token;
} tokens = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .next_token = 16,        /* keys 0, 1 and 2 are reserved by ptrmap */
};

/* In a child process: the tokens below this were detached before the
 * (last) fork, so their records belong to the parent.  Read under the
 * GIL of the child's only interpreter at first, written only by the fork
 * handler. */
static uint64_t forked_below;

/* Put `rec` (the caller's reference is taken over) in the table.  Returns
 * the token, or 0 with MemoryError (the reference is then released). */
static uint64_t
token_put(TpShare_Record *rec)
{
    tps_record_table_enter(rec);
    pthread_mutex_lock(&tokens.mutex);
    uint64_t token = tokens.next_token++;
    int rc = ptrmap_set(&tokens.records, (void *)(uintptr_t)token, rec);
    if (rc == 0 && (rec->flags & TPS_REC_BOUND)) {
        /* An owner whose exit already dropped its tokens drops this one
         * too.  Under the lock: once it is released the record may be
         * attached and freed. */
        tps_interp_requeued(rec->ownerst);
    }
    pthread_mutex_unlock(&tokens.mutex);
    if (rc < 0) {
        tps_record_table_leave(rec);
        tps_record_release(rec);
        PyErr_NoMemory();
        return 0;
    }
    return token;
}

/* Take the record of `token` out of the table (the table's reference
 * passes to the caller), or NULL if there is none. */
static TpShare_Record *
token_take(uint64_t token)
{
    int found = 0;
    TpShare_Record *rec = NULL;
    if (token >= 16) {
        pthread_mutex_lock(&tokens.mutex);
        rec = ptrmap_get(&tokens.records, (void *)(uintptr_t)token, &found);
        if (found) {
            ptrmap_del(&tokens.records, (void *)(uintptr_t)token);
        }
        pthread_mutex_unlock(&tokens.mutex);
    }
    return rec;
}

void
tps_tokens_forget_interp(int64_t interp)
{
    TpShare_Record *mine = NULL;   /* chained through next_release */

    pthread_mutex_lock(&tokens.mutex);
    PTRMAP_FOREACH(&tokens.records, s) {
        TpShare_Record *rec = s->value;
        if (rec->owner == interp) {
            rec->next_release = mine;
            mine = rec;
            ptrmap_delete_current(&tokens.records, s);
        }
    }
    pthread_mutex_unlock(&tokens.mutex);
    while (mine != NULL) {
        TpShare_Record *next = mine->next_release;
        tps_record_table_release(mine);
        mine = next;
    }
}

/* ---------------------------------------------------------------------
 * The Shared type.
 */

PyObject *
tps_shared_new(tps_module_state *state, TpShare_Record *rec)
{
    Shared *self = PyObject_New(Shared, state->SharedType);
    if (self == NULL) {
        tps_record_release(rec);
        return NULL;
    }
    self->holder = tps_current_interp_id();
    self->rec = rec;
    tps_record_hold(rec, self->holder);
    tps_record_release(rec);  /* the hold replaces the caller's reference */
    return (PyObject *)self;
}

PyObject *
tps_attach(tps_module_state *state, int64_t token)
{
    if (token >= 16 && (uint64_t)token < forked_below) {
        PyErr_Format(state->Error,
                     "token %lld was detached before fork(): it is not "
                     "usable in the child process (its record belongs to "
                     "the parent); detach values after the fork",
                     (long long)token);
        return NULL;
    }
    TpShare_Record *rec = token_take((uint64_t)token);
    if (rec == NULL) {
        PyErr_Format(PyExc_KeyError,
                     "no detached record with token %lld (each token "
                     "can be attached once)", (long long)token);
        return NULL;
    }
    /* The Shared holds the record before the table's count goes. */
    tps_record_incref(rec);
    PyObject *res = tps_shared_new(state, rec);
    tps_record_table_release(rec);
    return res;
}

static int
check_live(Shared *self)
{
    if (self->rec == NULL) {
        PyErr_SetString(PyExc_ValueError, "the Shared was released");
        return -1;
    }
    return 0;
}

static void
shared_clear(Shared *self)
{
    TpShare_Record *rec = self->rec;
    if (rec != NULL) {
        self->rec = NULL;
        tps_record_unhold(rec, self->holder);
    }
}

static void
shared_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    shared_clear((Shared *)op);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static PyObject *
shared_rebuild(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Shared *self = (Shared *)op;
    if (check_live(self) < 0) {
        return NULL;
    }
    return tps_rebuild(self->rec);
}

static PyObject *
shared_release(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    shared_clear((Shared *)op);
    Py_RETURN_NONE;
}

static PyObject *
shared_detach(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Shared *self = (Shared *)op;
    if (check_live(self) < 0) {
        return NULL;
    }
    TpShare_Record *rec = self->rec;
    tps_record_incref(rec);            /* the table's reference */
    uint64_t token = token_put(rec);
    if (token == 0) {
        return NULL;
    }
    shared_clear(self);
    return PyLong_FromUnsignedLongLong(token);
}

static PyObject *
shared_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(op);
}

static PyObject *
shared_exit(PyObject *op, PyObject *Py_UNUSED(args))
{
    shared_clear((Shared *)op);
    Py_RETURN_FALSE;
}

static PyObject *
shared_get_owner(PyObject *op, void *Py_UNUSED(closure))
{
    Shared *self = (Shared *)op;
    if (check_live(self) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(self->rec->owner);
}

static PyObject *
shared_get_bound(PyObject *op, void *Py_UNUSED(closure))
{
    Shared *self = (Shared *)op;
    if (check_live(self) < 0) {
        return NULL;
    }
    return PyBool_FromLong((self->rec->flags & TPS_REC_BOUND) != 0);
}

static PyObject *
shared_get_kind(PyObject *op, void *Py_UNUSED(closure))
{
    Shared *self = (Shared *)op;
    if (check_live(self) < 0) {
        return NULL;
    }
    return PyUnicode_FromString(self->rec->entry->name);
}

static PyObject *
shared_get_released(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((Shared *)op)->rec == NULL);
}

static PyObject *
shared_repr(PyObject *op)
{
    Shared *self = (Shared *)op;
    if (self->rec == NULL) {
        return PyUnicode_FromString("<tpshare.Shared (released)>");
    }
    return PyUnicode_FromFormat("<tpshare.Shared %s from interpreter %lld"
                                "%s>", self->rec->entry->name,
                                (long long)self->rec->owner,
                                (self->rec->flags & TPS_REC_BOUND)
                                    ? ", owner-bound" : "");
}

static PyMethodDef shared_methods[] = {
    {"rebuild", shared_rebuild, METH_NOARGS,
     "rebuild()\n--\n\nBuild the shared value in the current interpreter "
     "(a new object each call)."},
    {"release", shared_release, METH_NOARGS,
     "release()\n--\n\nLet go of the record now (idempotent)."},
    {"detach", shared_detach, METH_NOARGS,
     "detach()\n--\n\nHand the record to the process-wide table and "
     "return a token for tpshare.attach(); this Shared is released."},
    {"__enter__", shared_enter, METH_NOARGS, NULL},
    {"__exit__", shared_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef shared_getset[] = {
    {"owner", shared_get_owner, NULL,
     "ID of the interpreter that shared the value.", NULL},
    {"bound", shared_get_bound, NULL,
     "True if the record holds the owner's memory or objects (it is "
     "then freed in the owner).", NULL},
    {"kind", shared_get_kind, NULL,
     "Registration name of the hooks that shared the value.", NULL},
    {"released", shared_get_released, NULL,
     "True once release() or detach() was called.", NULL},
    {NULL},
};

static PyType_Slot shared_slots[] = {
    {Py_tp_dealloc, shared_dealloc},
    {Py_tp_repr, shared_repr},
    {Py_tp_methods, shared_methods},
    {Py_tp_getset, shared_getset},
    {Py_tp_doc, "A value shared out of its interpreter (see "
                "tpshare.share())."},
    {0, NULL},
};

static PyType_Spec shared_spec = {
    .name = "tpshare.Shared",
    .basicsize = sizeof(Shared),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = shared_slots,
};

int
tps_shared_init_type(PyObject *module, tps_module_state *state)
{
    state->SharedType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &shared_spec, NULL);
    if (state->SharedType == NULL) {
        return -1;
    }
    return PyModule_AddType(module, state->SharedType);
}

void
tps_tokens_atfork(tps_fork_phase phase)
{
    switch (phase) {
    case TPS_FORK_PREPARE:
        pthread_mutex_lock(&tokens.mutex);
        break;
    case TPS_FORK_PARENT:
        pthread_mutex_unlock(&tokens.mutex);
        break;
    case TPS_FORK_CHILD:
        /* The records stay in the table (those of the main interpreter,
         * which lives on, are released at its exit as usual); their
         * tokens no longer attach. */
        forked_below = tokens.next_token;
        pthread_mutex_unlock(&tokens.mutex);
        break;
    }
}
