/* pytypes.h - the Python layer: the types and functions tpshare shows
 * Python (module.c, channel.c, shared.c, view.c, buffer_type.c,
 * interpreter.c), as the lower layers and each other see them.
 */
#ifndef TPSHARE_PYTYPES_H
#define TPSHARE_PYTYPES_H

#ifndef TPSHARE_BUILD_CORE
#error "pytypes.h is internal to tpshare"
#endif

#include "common.h"
#include "module_state.h"
#include "record.h"

/* Parse a timeout argument (borrowed; NULL or None: forever, -1) into
 * nanoseconds.  0, or -1 with ValueError (negative, NaN) or TypeError. */
int tps_parse_timeout(PyObject *arg, int64_t *ns);

/* The exported C API table (src/module.c). */
extern const TpShare_CAPI tps_capi;


/* view.c: a new cross-interpreter view object (new reference) exporting
 * the buffer `src` (borrowed, owned by `rec`, which the view holds), or
 * NULL with an exception. */
PyObject *tps_view_new(TpShare_Record *rec, const Py_buffer *src);
int tps_view_init_type(PyObject *module, tps_module_state *state);

/* shared.c: the Shared type and the process-wide token table. */
int tps_shared_init_type(PyObject *module, tps_module_state *state);
/* A new Shared (new reference) holding `rec` (the caller's reference is
 * taken over), or NULL with an exception (the reference is released). */
PyObject *tps_shared_new(tps_module_state *state, TpShare_Record *rec);
PyObject *tps_attach(tps_module_state *state, int64_t token);
void tps_tokens_forget_interp(int64_t interp);

/* buffer_type.c: tpshare.Buffer, memory of no interpreter. */
int tps_buffer_init_type(PyObject *module, tps_module_state *state);
/* The interpreter's Buffer of the pickled block `id` (the live one it
 * has, else a new one): new reference, or NULL with tpshare.Error when
 * the block is gone. */
PyObject *tps_buffer_from_id(tps_module_state *state, int64_t id);
/* A new hold on the memory of Buffer `buf` (borrowed), as an opaque
 * block pointer; let go with tps_buffer_release (any thread, no GIL). */
void *tps_buffer_hold(PyObject *buf);
void tps_buffer_retain(void *block);   /* one more hold */
void tps_buffer_release(void *block);
/* The interpreter's Buffer over `block`, taking over the caller's hold:
 * the live one it has, else a new one.  New reference or NULL. */
PyObject *tps_buffer_get(tps_module_state *state, void *block);

/* handle_share.c: pickling by id.  (callable, args) for unpickling the
 * object `self` (borrowed; a handle or a Buffer) of kind `kind`
 * ("Channel", "MemChannel", "Queue" or "Buffer") known by `id` in this
 * process.  New reference or NULL. */
PyObject *tps_pickle_reduce(PyObject *self, const char *kind, int64_t id);

/* channel.c: the Channel and MemChannel types. */
int tps_channel_init_types(PyObject *module, tps_module_state *state);
/* Raise the exception for a TPS_ERR_* code (no-op for TPS_ERR_PYTHON and
 * TPS_ERR_SIGNAL, whose exception is set).  Returns NULL. */
PyObject *tps_raise_error(tps_module_state *state, int code);


/* Add the functions _interp_start, _interp_run, _interp_interrupt,
 * _interp_abandon, _interp_end and _interp_list, used by
 * tpshare/_interpreters.py, to `module` (borrowed).  0 or -1. */
int tps_interpreters_init(PyObject *module);
/* The private functions tpshare.shm.Channel uses for registered types
 * (crossproc.c) added to `module` (borrowed).  0 or -1. */
int tps_crossproc_init(PyObject *module);

#endif /* TPSHARE_PYTYPES_H */
