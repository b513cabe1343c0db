/* cpython_xid.c - tpshare's objects in CPython's own cross-interpreter
 * machinery: the only file that uses CPython's private registry of
 * cross-interpreter data ("XID": what CPython's interpreters module uses
 * for prepare_main() and exec's shared namespace, and its queues and
 * channels for their items).
 *
 * Checked on CPython 3.12.1 and 3.13.0.  Both export the same functions
 * (_PyCrossInterpreterData_RegisterClass, _PyCrossInterpreterData_Init)
 * and lay the data struct out the same way (data, obj, owner interpreter
 * ID, new_object, free); 3.12 declares them in cpython/pystate.h, 3.13
 * only in internal/pycore_crossinterp.h, which needs Py_BUILD_CORE, so
 * for 3.13 this file declares the same layout and functions itself.
 * 3.14 renamed all of it (_PyXIData_t, _PyXIData_RegisterClass taking a
 * thread state and a {basic, fallback} pair of functions, the free
 * function's rules), so on any other version this file registers nothing
 * (tpshare's handles then do not cross CPython's machinery, and bridge()
 * raises NotImplementedError) instead of calling functions whose layout
 * it does not know.
 *
 * What it does:
 *   tps_xid_register_types()  registers the interpreter's Channel,
 *       MemChannel, Queue and Buffer types from the module's exec (heap
 *       types: CPython keeps them in a per-interpreter registry).  Their
 *       data is the channel (or the Buffer's memory) with a reference of
 *       its own, so it cannot vanish while in flight; CPython's release
 *       of the data drops that reference.  The receiver gets its own
 *       live handle of that channel when it has one, else a new one.
 *   tps_xid_bridge()  registers a type that tpshare has hooks for: its
 *       data is a tpshare share record, rebuilt by the receiver and
 *       released by CPython's release of the data.
 *
 * CPython calls a data's free function in the interpreter that made it
 * (a pending call when released elsewhere) and skips it when that
 * interpreter is gone; its queues release the items of an interpreter
 * that is being destroyed before it goes.  The free functions here need
 * no GIL and no particular interpreter.
 */
#include "channel.h"
#include "cpython_xid.h"

#if PY_VERSION_HEX < 0x030C0000 || PY_VERSION_HEX >= 0x030E0000
/* A version this file was not checked on: tpshare builds and works, but
 * its objects do not enter CPython's registry (CPython's machinery
 * refuses them as it refuses any unregistered type) and bridge() says
 * why. */
int
tps_xid_register_types(tps_module_state *Py_UNUSED(state))
{
    return 0;
}

int
tps_xid_bridge(PyTypeObject *Py_UNUSED(type))
{
    PyErr_Format(PyExc_NotImplementedError,
                 "bridging to CPython's cross-interpreter data is checked "
                 "on CPython 3.12 and 3.13 only, not on %s",
                 Py_GetVersion());
    return -1;
}

#else   /* 3.12 and 3.13 */

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13: the layout of struct _xid in internal/pycore_crossinterp.h. */
typedef struct tps_xid tps_xid;
struct tps_xid {
    void *data;
    PyObject *obj;
    int64_t interpid;
    PyObject *(*new_object)(tps_xid *);
    void (*free)(void *);
};
typedef int (*tps_xid_getdata)(PyThreadState *, PyObject *, tps_xid *);
PyAPI_FUNC(int) _PyCrossInterpreterData_RegisterClass(PyTypeObject *,
                                                      tps_xid_getdata);
PyAPI_FUNC(void) _PyCrossInterpreterData_Init(
    tps_xid *data, PyInterpreterState *interp, void *shared, PyObject *obj,
    PyObject *(*new_object)(tps_xid *));
#else
/* 3.12: cpython/pystate.h, included by Python.h. */
typedef _PyCrossInterpreterData tps_xid;
typedef crossinterpdatafunc tps_xid_getdata;
#endif

/* Fill `data` for `shared` (made in `tstate`'s interpreter), rebuilt by
 * `new_object` and released by `release`. */
static void
xid_fill(tps_xid *data, PyThreadState *tstate, void *shared,
         PyObject *(*new_object)(tps_xid *), void (*release)(void *))
{
    _PyCrossInterpreterData_Init(data, tstate->interp, shared, NULL,
                                 new_object);
    /* Init clears `free` (both versions): set it afterwards. */
    data->free = release;
}

/* tpshare's module in the receiving (current) interpreter, which may not
 * have imported it yet: a new reference, held while its state is used,
 * or NULL with an exception. */
static PyObject *
receiver_module(void)
{
    return PyImport_ImportModule("tpshare._tpshare");
}

/* ---------------------------------------------------------------------
 * Channel, MemChannel, Queue and Buffer.
 */

static void
xid_channel_release(void *ch)
{
    tps_channel_decref(ch);
}

/* data: borrowed.  New reference or NULL. */
static PyObject *
handle_newobject(tps_xid *data, tps_kind k)
{
    PyObject *module = receiver_module();
    if (module == NULL) {
        return NULL;
    }
    tps_channel *ch = data->data;
    tps_channel_incref(ch);
    PyObject *res = tps_handle_get(PyModule_GetState(module), k, ch);
    Py_DECREF(module);
    return res;
}

static PyObject *
channel_newobject(tps_xid *data)
{
    return handle_newobject(data, TPS_KIND_CHANNEL);
}

static PyObject *
memchannel_newobject(tps_xid *data)
{
    return handle_newobject(data, TPS_KIND_MEM);
}

static PyObject *
queue_newobject(tps_xid *data)
{
    return handle_newobject(data, TPS_KIND_QUEUE);
}

/* obj: borrowed, a handle of the current interpreter.  0 (cannot fail). */
static int
handle_getdata(PyThreadState *tstate, PyObject *obj, tps_xid *data)
{
    tps_module_state *state = tps_handle_state(obj);
    tps_channel *ch = ((tps_handle *)obj)->ch;
    tps_kind k = tps_handle_kind(obj, state);
    tps_channel_incref(ch);
    xid_fill(data, tstate, ch,
             k == TPS_KIND_MEM ? memchannel_newobject
             : k == TPS_KIND_QUEUE ? queue_newobject : channel_newobject,
             xid_channel_release);
    return 0;
}

/* data: borrowed.  New reference or NULL. */
static PyObject *
buffer_newobject(tps_xid *data)
{
    PyObject *module = receiver_module();
    if (module == NULL) {
        return NULL;
    }
    tps_buffer_retain(data->data);
    PyObject *res = tps_buffer_get(PyModule_GetState(module), data->data);
    Py_DECREF(module);
    return res;
}

/* obj: borrowed, a Buffer.  0 (cannot fail). */
static int
buffer_getdata(PyThreadState *tstate, PyObject *obj, tps_xid *data)
{
    xid_fill(data, tstate, tps_buffer_hold(obj), buffer_newobject,
             tps_buffer_release);
    return 0;
}

int
tps_xid_register_types(tps_module_state *state)
{
    if (_PyCrossInterpreterData_RegisterClass(state->ChannelType,
                                              handle_getdata) < 0
        || _PyCrossInterpreterData_RegisterClass(state->MemChannelType,
                                                 handle_getdata) < 0
        || _PyCrossInterpreterData_RegisterClass(state->QueueType,
                                                 handle_getdata) < 0
        || _PyCrossInterpreterData_RegisterClass(state->BufferType,
                                                 buffer_getdata) < 0)
    {
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * The bridge: any type tpshare has hooks for, as a share record.
 */

static void
bridge_release(void *rec)
{
    tps_record_release(rec);
}

/* data: borrowed.  New reference or NULL.  tpshare is imported first if
 * the receiver has not yet: the record may hold tpshare's own types. */
static PyObject *
bridge_newobject(tps_xid *data)
{
    PyObject *module = receiver_module();
    if (module == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    if (tps_enter() != NULL) {
        res = tps_rebuild(data->data);
    }
    Py_DECREF(module);
    return res;
}

/* obj: borrowed.  0, or -1 with NotShareableError or a hook's
 * exception. */
static int
bridge_getdata(PyThreadState *tstate, PyObject *obj, tps_xid *data)
{
    if (tps_enter() == NULL) {
        return -1;
    }
    TpShare_Record *rec = tps_share(obj);
    if (rec == NULL) {
        return -1;
    }
    xid_fill(data, tstate, rec, bridge_newobject, bridge_release);
    return 0;
}

int
tps_xid_bridge(PyTypeObject *type)
{
    TpShare_Hooks hooks = {TPSHARE_HOOKS_INIT};
    int found = tps_registry_lookup(type, &hooks);
    if (found < 0) {
        return -1;
    }
    if (!found) {
        PyErr_Format(PyExc_TypeError,
                     "type '%s' is not registered with tpshare: register "
                     "its hooks before bridging it", type->tp_name);
        return -1;
    }
    return _PyCrossInterpreterData_RegisterClass(type, bridge_getdata);
}

#endif   /* 3.12 and 3.13 */
