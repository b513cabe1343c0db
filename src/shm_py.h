/* shm_py.h - the Python types of tpshare._shm (shm_chan.c, shm_objs.c).
 *
 * Every object lives in one interpreter: the module keeps its types and
 * exceptions in its per-interpreter state, and each object holds a
 * strong reference to the module it came from.  Objects that export
 * segment memory (views, buffers) and trackers hold their channel, so
 * the mapping outlives them.
 */
#ifndef TPSHARE_SHM_PY_H
#define TPSHARE_SHM_PY_H

#include "compat.h"
#include "shm.h"

/* A Python exception is set (beside shm.h's codes). */
#define TPS_SHM_PYERR (-100)

typedef struct {
    PyTypeObject *ChanType;
    PyTypeObject *BufferType;
    PyTypeObject *ViewType;
    PyTypeObject *TrackerType;
    PyObject *ChannelClosed;
    PyObject *ChannelEmpty;
    PyObject *ChannelFull;
    PyObject *CorruptSegmentError;
    /* The tracker of every copy: released from the start, so one
     * object serves them all. */
    PyObject *released;
} shm_state;

/* A handle: one mapping of a segment in this process. */
typedef struct {
    PyObject_HEAD
    tps_shm_map map;
    int fd;
    pid_t pid;          /* the process that made this mapping's handle */
    uint8_t token[TPS_SHM_TOKEN];
    PyObject *module;   /* strong */
    PyObject *weakrefs;
} ShmChan;

/* Memory of a block: a received view's (ViewType) or a buffer's not yet
 * sent (BufferType). */
typedef struct {
    PyObject_HEAD
    ShmChan *chan;      /* strong */
    char *ptr;
    Py_ssize_t len;
    uint32_t block;
    uint32_t gen;
    pid_t pid;          /* only this process frees the block */
    int readonly;
    int sent;           /* BufferType: handed to the channel */
    Py_ssize_t exports;
} ShmMem;

typedef struct {
    PyObject_HEAD
    ShmChan *chan;      /* strong; NULL when released from the start */
    uint32_t block;
    uint32_t gen;
} ShmTracker;

extern PyModuleDef tps_shm_module;

shm_state *tps_shm_state(PyObject *module);
int tps_shm_raise(ShmChan *c, int rc, const char *what);
int tps_shm_lock_py(ShmChan *c, int64_t deadline);
PyObject *tps_shm_tracker_new(ShmChan *c, uint32_t block, uint32_t gen,
                              int released);
PyObject *tps_shm_mem_new(ShmChan *c, PyTypeObject *type, uint32_t block,
                          uint32_t gen, uint64_t off, uint64_t len,
                          int readonly);
void tps_shm_release_block(ShmChan *c, uint32_t block, uint32_t gen,
                           uint32_t state);
int tps_shm_deadline(PyObject *timeout, int64_t *deadline);
int tps_shm_alloc_wait(ShmChan *c, uint64_t len, uint32_t flags,
                       int64_t deadline, uint32_t *idx);

/* The channel's input and output methods (shm_chan.c). */
PyObject *tps_shm_send(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);
PyObject *tps_shm_send_many(ShmChan *c, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_shm_recv(ShmChan *c, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);
PyObject *tps_shm_recv_tagged(ShmChan *c, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames);
PyObject *tps_shm_recv_many(ShmChan *c, PyObject *args, PyObject *kwds);
Py_ssize_t tps_shm_take_slots(ShmChan *c, tps_shm_slot *out, Py_ssize_t max,
                              int64_t deadline);
PyObject *tps_shm_take(ShmChan *c, const tps_shm_slot *s);

/* Marshal data from a segment, checked, then loaded (shm_marshal.c).
 * `arg` borrowed; new reference or NULL with an exception. */
PyObject *tps_shm_loads(ShmChan *c, PyObject *arg);
/* tpshare.shm.Channel's values in C (shm_batch.c). */
size_t tps_shm_value_encode(PyObject *obj, uint8_t *dst, size_t cap);
PyObject *tps_shm_recv_values(ShmChan *c, PyObject *const *args,
                              Py_ssize_t nargs);

/* marshal's type codes (Python/marshal.c) that shm.Channel's values use,
 * and its flag for a value that later data may refer back to: written
 * and read in C by shm_batch.c, checked by shm_marshal.c. */
#define M_NONE 'N'
#define M_FALSE 'F'
#define M_TRUE 'T'
#define M_INT 'i'
#define M_LONG 'l'
#define M_BINARY_FLOAT 'g'
#define M_BINARY_COMPLEX 'y'
#define M_STRING 's'
#define M_INTERNED 't'
#define M_REF 'r'
#define M_TUPLE '('
#define M_SMALL_TUPLE ')'
#define M_UNICODE 'u'
#define M_ASCII 'a'
#define M_ASCII_INTERNED 'A'
#define M_SHORT_ASCII 'z'
#define M_SHORT_ASCII_INTERNED 'Z'
#define M_FLAG_REF 0x80

/* marshal's 32-bit little-endian integers. */
static inline uint32_t
tps_shm_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

#endif /* TPSHARE_SHM_PY_H */
