/* handlers_text.c - built-in handlers for str and bytes.
 *
 * str and bytes below the share threshold are copied into the record
 * (neutral): up to 16 bytes of character data sit inline, longer ones in
 * memory of the record's (DataAlloc) or raw memory.  Every kind of
 * str round-trips exactly, lone surrogates and embedded NULs included,
 * because the code units are copied as they are.
 *
 * At or above the threshold (in bytes of data, for both) the record keeps
 * a reference to the sender's object instead (owner-bound, no copy at
 * send) and the receiver makes its one copy straight from the sender's
 * memory, which cannot change because str and bytes are immutable.  The
 * threshold is process-wide and measured by bench/bench_bytes_threshold.py;
 * see docs/design.md.
 */
#include "handlers.h"

#include <string.h>

#define INLINE_MAX ((Py_ssize_t)sizeof(((TpShare_Data *)0)->inline_data))

/* Copy n bytes into the record: inline when they fit (ptr stays NULL),
 * else into memory that comes and goes with the record (DataAlloc: the
 * line after it, or a block of a size class; up to TPSHARE_DATA_ALLOC_MAX
 * bytes) or new raw memory.  Returns 0 or -1 with MemoryError. */
static int
copy_in(TpShare_Data *data, const void *src, Py_ssize_t n)
{
    if (n <= INLINE_MAX) {
        memcpy(data->inline_data.bytes, src, (size_t)n);
        return 0;
    }
    if (tps_handlers_api.DataAlloc(data, (size_t)n) == NULL) {
        data->ptr = tps_handlers_api.Malloc((size_t)n);
    }
    if (data->ptr == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(data->ptr, src, (size_t)n);
    return 0;
}

static inline const void *
payload(const TpShare_Data *data)
{
    return data->ptr != NULL ? data->ptr
                             : (const void *)data->inline_data.bytes;
}

/* --- str: size = length in code points, aux = kind, plus STR_ASCII. ---
 *
 * A str is always in its canonical form (the narrowest kind that holds
 * its widest character), so the sender's kind and ASCII flag say exactly
 * which form the copy takes: the receiver allocates it directly and
 * copies the code units, with no scan for the widest character. */

#define STR_ASCII 0x100u

/* Whether n bytes of an immutable object's data are shared rather than
 * copied.  Copied anyway when the copy must not depend on the sender (its
 * items left queued when it exits: tps_record_neutral_copy). */
/* Hidden like every internal, so the handlers read it straight (one
 * load, no trip through the GOT); the benchmarks' probe finds it through
 * the one exported symbol, its address: see registry.h. */
_Atomic Py_ssize_t tps_bytes_share_min = TPS_BYTES_SHARE_MIN;
__attribute__((visibility("default")))
_Atomic Py_ssize_t *const tps_bytes_share_min_addr = &tps_bytes_share_min;

/* Payloads that fit inline are copied at the production threshold, so
 * shares() needs no test against INLINE_MAX; when the probe lowers the
 * threshold, even those are shared, as it asked. */
_Static_assert(TPS_BYTES_SHARE_MIN > INLINE_MAX,
               "payloads that fit inline are copied in production");

static inline int
shares(Py_ssize_t n)
{
    return n >= atomic_load_explicit(&tps_bytes_share_min,
                                     memory_order_relaxed)
           && !tps_handlers_api.MustCopy();
}

static int
str_share(PyObject *obj, TpShare_Data *data)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(obj);
    int kind = PyUnicode_KIND(obj);
    data->size = len;
    data->aux = (uint32_t)kind | (PyUnicode_IS_ASCII(obj) ? STR_ASCII : 0);
    if (shares(len * kind)) {
        data->obj = Py_NewRef(obj);
        data->ptr = PyUnicode_DATA(obj);
        return 0;
    }
    return copy_in(data, PyUnicode_DATA(obj), len * kind);
}

static PyObject *
str_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    int kind = (int)(data->aux & 0xff);
    Py_UCS4 maxchar = (data->aux & STR_ASCII) ? 0x7f
                      : kind == PyUnicode_1BYTE_KIND ? 0xff
                      : kind == PyUnicode_2BYTE_KIND ? 0xffff : 0x10ffff;
    PyObject *res = PyUnicode_New(data->size, maxchar);
    if (res != NULL && data->size > 0) {
        memcpy(PyUnicode_DATA(res), payload(data),
               (size_t)data->size * (size_t)kind);
    }
    return res;
}

/* --- bytes: size = length; obj set when shared rather than copied. --- */

static int
bytes_share(PyObject *obj, TpShare_Data *data)
{
    Py_ssize_t len = PyBytes_GET_SIZE(obj);
    data->size = len;
    if (shares(len)) {
        data->obj = Py_NewRef(obj);
        data->ptr = PyBytes_AS_STRING(obj);
        return 0;
    }
    return copy_in(data, PyBytes_AS_STRING(obj), len);
}

static PyObject *
bytes_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    return PyBytes_FromStringAndSize(payload(data), data->size);
}

static void
bytes_free(TpShare_Data *data)
{
    if (data->obj == NULL) {
        tps_handlers_api.Free(data->ptr);
    }
    /* Otherwise ptr points into data->obj, which tpshare releases. */
}

static const TpShare_Hooks str_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_IMMUTABLE, "builtins.str",
    str_share, str_rebuild, bytes_free,
};

static const TpShare_Hooks bytes_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_IMMUTABLE, "builtins.bytes",
    bytes_share, bytes_rebuild, bytes_free,
};

/* --- pickled objects: bytes on the wire, pickle.loads() on receipt. ---
 * Not a registration by type (the channel picks it for what has no
 * registration of its own, Channel(fallback="pickle")), so it is made
 * as an entry of its own rather than registered; that is the only part
 * of these handlers with no public counterpart. */

tps_entry *tps_pickle_entry = NULL;

static PyObject *
pickled_rebuild(PyTypeObject *Py_UNUSED(type), const TpShare_Data *data)
{
    PyObject *pickle = NULL, *raw = NULL, *res = NULL;
    pickle = PyImport_ImportModule("pickle");
    if (pickle != NULL) {
        raw = PyBytes_FromStringAndSize(payload(data), data->size);
    }
    if (raw != NULL) {
        res = PyObject_CallMethod(pickle, "loads", "O", raw);
    }
    Py_XDECREF(raw);
    Py_XDECREF(pickle);
    return res;
}

static const TpShare_Hooks pickle_hooks = {
    TPSHARE_HOOKS_INIT, TPSHARE_COPIES | TPSHARE_ANY_RESULT,
    "tpshare.pickled", bytes_share, pickled_rebuild, bytes_free,
};

int
tps_handlers_text_init(void)
{
    tps_pickle_entry = tps_entry_new(NULL, -1, &pickle_hooks);
    if (tps_pickle_entry == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (tps_handlers_api.Register(&PyUnicode_Type, &str_hooks, 0) < 0
        || tps_handlers_api.Register(&PyBytes_Type, &bytes_hooks, 0) < 0)
    {
        return -1;
    }
    return 0;
}
