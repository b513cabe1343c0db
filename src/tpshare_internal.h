/* tpshare_internal.h - declarations shared by tpshare's own C files.
 *
 * Layers, bottom up (each only calls the ones below it):
 *   registry/  the process-wide type registry and the built-in handlers;
 *   record.c   share records: share, rebuild, release;
 *   owner.c    per-interpreter state: release lists, counters, exit hook;
 *   view.c, shared.c, module.c   the Python-visible types and functions.
 *
 * Naming: non-static internals start with tps_; static helpers have no
 * prefix.  Interpreters are named by ID (int64_t), never by a stored
 * PyInterpreterState*.  Code under raw locks returns negative TPS_ERR_*
 * codes instead of raising.
 */
#ifndef TPSHARE_INTERNAL_H
#define TPSHARE_INTERNAL_H

#ifndef TPSHARE_BUILD_CORE
#error "tpshare_internal.h is internal to tpshare; include tpshare.h instead"
#endif

#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdint.h>

#include "tpshare.h"
#include "compat.h"
#include "cacheline.h"
#include "blocks.h"

/* ---------------------------------------------------------------------
 * Registry entries (registry/registry.c).
 */

/* One registration.  Refcounted: the registry, per-interpreter lookup
 * caches and every record made with it hold a reference, so the hooks and
 * the name stay valid after Unregister() while records still use them. */
typedef struct tps_entry {
    atomic_long refcnt;
    /* The registered type.  Not a reference: a static type lives for the
     * process; a heap type's entry is unregistered (by a weakref callback)
     * before the type is freed.  NULL for the buffer-protocol fallback. */
    PyTypeObject *type;
    /* -1: process-wide (static types); otherwise the ID of the only
     * interpreter where this registration is visible. */
    int64_t interp;
    /* A copy of the caller's hooks; hooks.name points at `name`. */
    TpShare_Hooks hooks;
    /* Owned, raw memory; freed with the entry. */
    char *name;
    /* Built-in registrations live for the process: no refcounting. */
    int immortal;
} tps_entry;

/* A new entry (one reference) with a copy of `hooks`, or NULL on memory
 * failure.  Not registered anywhere. */
tps_entry *tps_entry_new(PyTypeObject *type, int64_t interp,
                         const TpShare_Hooks *hooks);
void tps_entry_incref(tps_entry *e);
void tps_entry_decref(tps_entry *e);

/* The entry used to share objects of `type` (borrowed) in the current
 * interpreter: exact registration, else a registration accepting
 * subclasses found on the MRO, else the buffer fallback when the type
 * exports buffers.  Returns a borrowed entry (valid until the current
 * interpreter next calls into the registry with the GIL released), or
 * NULL without an exception when the type is not shareable.  Needs the
 * GIL. */
tps_entry *tps_registry_find(PyTypeObject *type);

/* The built-in registration of exactly `type` when it is one of the
 * built-in types and unchanged, else NULL: a lock-free first check.
 * Borrowed (built-in entries are immortal). */
tps_entry *tps_registry_fast(PyTypeObject *type);

/* The current interpreter's entry for a record made with `sent`, found by
 * name: `sent` itself when it is visible here.  Returns a borrowed entry
 * or NULL with LookupError.  Needs the GIL. */
tps_entry *tps_registry_find_for_rebuild(tps_entry *sent);

int tps_registry_register(PyTypeObject *type, const TpShare_Hooks *hooks,
                          unsigned int flags);
int tps_registry_unregister(PyTypeObject *type);
int tps_registry_lookup(PyTypeObject *type, TpShare_Hooks *out);

/* A list of (name, type, flags) visible in the current interpreter; new
 * reference. */
PyObject *tps_registry_list(void);

/* Process-wide set-up of the registry and the built-in registrations,
 * once per process (idempotent); and per-interpreter teardown of the
 * registrations and caches of interpreter `interp`. */
int tps_registry_init(void);
void tps_registry_forget_interp(int64_t interp);

/* Built-in handler registration (registry/handlers_*.c).  Each adds its
 * process-wide registrations; called once from tps_registry_init(). */
int tps_handlers_scalar_init(void);
int tps_handlers_text_init(void);
int tps_handlers_tuple_init(void);
int tps_handlers_buffer_init(void);

/* The registration of pickled objects (Channel(fallback="pickle")):
 * shared as the bytes of pickle.dumps(), rebuilt with pickle.loads()
 * (registry/handlers_text.c). */
extern tps_entry *tps_pickle_entry;

/* The buffer-protocol fallback entry, and its writable variant used by
 * MemChannel.send(writable=True) (registry/handlers_export.c). */
extern tps_entry *tps_buffer_entry;
extern tps_entry *tps_buffer_writable_entry;

/* Bytes at least this long are shared owner-bound rather than copied
 * (registry/handlers_text.c).  Sets it when value >= 0; returns it. */
Py_ssize_t tps_bytes_threshold(Py_ssize_t value);

/* The record that embeds `data` (built-in handlers only: records made by
 * tpshare always embed their data). */
#define TPS_RECORD_OF(data) \
    ((TpShare_Record *)((char *)(data) - offsetof(TpShare_Record, data)))

/* ---------------------------------------------------------------------
 * Module state (src/module.c): one per interpreter that imports tpshare.
 */

typedef struct {
    PyObject *Error;
    PyObject *NotShareableError;
    PyObject *ChannelClosed;
    PyObject *ChannelEmpty;
    PyObject *ChannelFull;
    PyObject *QueueEmpty;
    PyObject *QueueFull;
    PyObject *ItemInterpreterDestroyed;
    /* tpshare.UNBOUND, UNBOUND_ERROR, UNBOUND_REMOVE: index policy - 1
     * (TPS_UNBOUND_*), instances of UnboundType. */
    PyObject *unbound[3];
    PyTypeObject *UnboundType;
    PyTypeObject *SharedType;
    PyTypeObject *ViewType;
    PyTypeObject *TrackerType;
    PyTypeObject *ChannelType;
    PyTypeObject *MemChannelType;
    PyTypeObject *QueueType;
    PyTypeObject *BufferType;
    struct tps_identity *identity;   /* owned; identity.c */
} tps_module_state;

/* ---------------------------------------------------------------------
 * Per-interpreter state (src/owner.c).
 */

typedef struct tps_interp tps_interp;

/* The state of the current interpreter, created on first use.  Borrowed;
 * NULL with an exception on memory failure.  Needs the GIL. */
tps_interp *tps_interp_current(void);
int64_t tps_interp_id(const tps_interp *st);

/* Every Python-facing entry into tpshare starts here: the current
 * interpreter's state, after running the releases queued for it (D4).
 * Borrowed; NULL with an exception. */
tps_interp *tps_enter(void);

/* Hold/let go of an interpreter state (a record made in it holds one, so
 * the release list outlives the interpreter's exit for late frees). */
void tps_interp_incref(tps_interp *st);
void tps_interp_decref(tps_interp *st);

/* Counters of owner-bound records: alive, and holders of them in other
 * interpreters (which the owner's teardown waits for, D5). */
void tps_interp_export_add(tps_interp *st, long n);
void tps_interp_remote_add(tps_interp *st, long n);

/* Owner-bound records of the interpreter that sit in a channel or in the
 * token table, or were taken out of one by a receiver that is not done
 * with them yet: the owner's exit settles those still queued and waits
 * for the others, like for remote holders.  Counted before a record
 * enters a queue, so it is counted all the time another interpreter may
 * read it (tps_record_queue_enter / tps_record_queue_release). */
void tps_interp_queued_add(tps_interp *st, long n);
/* A record of the interpreter went (back) into a queue: if its exit is
 * waiting, it settles the queues again. */
void tps_interp_requeued(tps_interp *st);

/* Queue `rec` (whose refcount reached zero elsewhere) for freeing in its
 * owner.  Never fails; may run without any GIL; takes no lock unless a
 * pending call must be queued, a parked thread woken or an exit told.
 * The caller keeps `st` alive across the call. */
void tps_interp_push_release(tps_interp *st, TpShare_Record *rec);

/* Set whether the calling thread, parked in a channel wait, drains its
 * interpreter's releases (1, the default) or leaves them to its other
 * threads (0).  Returns the previous setting. */
int tps_thread_parked_drains(int flag);

/* Threads parked in tpshare register here (see waiter.h) so a release
 * pushed to their interpreter wakes one of them to drain it. */
struct tps_wnode;
void tps_interp_watch(tps_interp *st, struct tps_wnode *node);
void tps_interp_unwatch(tps_interp *st, struct tps_wnode *node);
/* Trackers: a thread counts itself in (delta +1) before it checks its
 * tracker and parks, out (-1) after; firing a tracker then wakes every
 * watcher, only while somebody waits on a tracker. */
void tps_interp_tracker_waits(tps_interp *st, int delta);
void tps_interp_wake_watchers(tps_interp *st);
int tps_interp_has_pending(tps_interp *st);

/* Free everything queued for the current interpreter.  Needs the GIL.
 * Cheap when the list is empty (one atomic load). */
void tps_interp_drain(tps_interp *st);
/* How many drains have freed something so far: a thread that was woken
 * to drain sees whether another thread of its interpreter did it. */
unsigned long tps_interp_drains(tps_interp *st);

/* The process has begun to exit: exit hooks stop waiting for remote
 * holders (as during finalization; see docs/design.md). */
void tps_interp_process_exiting(void);

/* Stop the waits of interpreter `id` (tpshare.Interpreter's at-exit
 * hook, through interpreter.c): from now on a tpshare wait in it (channel
 * send/recv, Tracker.wait) fails with TPS_ERR_EXITING instead of parking,
 * and the threads of it parked as watchers are woken.  Channel waits that
 * are not watching are woken by tps_channels_wake_all().  Returns 0, or
 * -1 when tpshare has no state for that interpreter.  Any thread. */
int tps_interp_stop(int64_t id);
/* Whether the waits of the interpreter of `st` were stopped.  A waiter
 * checks after it is on a wait list (under that list's lock), so that a
 * stop either sees it there or is seen by it. */
int tps_interp_is_stopping(tps_interp *st);

/* Run `cb(interp_id)` in every interpreter's exit hook, before it waits
 * for remote holders (used to drop what it left unclaimed).  Returns 0 or
 * -1 when the fixed table of callbacks is full. */
int tps_interp_add_exit_callback(void (*cb)(int64_t));

/* The current interpreter's tpshare module state (borrowed), or NULL
 * with RuntimeError; and the hook module exec uses to set it. */
tps_module_state *tps_interp_module_state(tps_interp *st);
void tps_interp_set_module(tps_interp *st, PyObject *module);

/* A dict of {interp id: {"exports", "remote", "pending"}}; new reference. */
PyObject *tps_interp_stats(void);

/* ---------------------------------------------------------------------
 * Records (src/record.c).
 */

#define TPS_REC_BOUND 0x1u   /* this record or a nested one is owner-bound */
#define TPS_REC_DUP   0x2u   /* referenced twice inside one message */
#define TPS_REC_IMMUTABLE 0x4u  /* the whole value can never change and
                                   its rebuild holds nothing of the owner's:
                                   a receiver may keep it (identity) */
#define TPS_REC_SMALL 0x8u   /* data.ptr is a small block (tps_small_alloc) */
#define TPS_REC_TAIL 0x10u   /* data.ptr is the line after the record */
#define TPS_REC_LONG 0x20u   /* the record's block has that line */
/* Bits 6-7: what the sender asked for the item if its interpreter exits
 * before it is received and it cannot be copied (TPS_UNBOUND_*); 0: the
 * channel's choice. */
#define TPS_REC_UNBOUND_SHIFT 6
#define TPS_REC_UNBOUND_MASK (0x3u << TPS_REC_UNBOUND_SHIFT)

/* PEP 734's unbounditems: what a channel delivers for an owner-bound item
 * whose owner exited before it was received and that could not be turned
 * into a neutral copy (a view of the owner's memory). */
#define TPS_UNBOUND_MARK   1u  /* tpshare.UNBOUND in its place */
#define TPS_UNBOUND_ERROR  2u  /* its recv raises ItemInterpreterDestroyed */
#define TPS_UNBOUND_REMOVE 3u  /* removed, counted in stats()["dropped"] */

struct TpShare_Record {
    /* Holders: the creator, nested parents, Shared objects, views. */
    atomic_long refcnt;
    uint32_t flags;
    /* Owner interpreter ID; for a bound record also a held pointer to
     * its state (released when the record is freed). */
    int64_t owner;
    tps_interp *ownerst;
    /* Held reference to the registration used to share. */
    tps_entry *entry;
    /* Link in the owner's release list while queued there. */
    TpShare_Record *next_release;
    /* Held; told when the record is freed (MemChannel.send's tracker). */
    struct tps_tracker *tracker;
    /* Identity across messages (identity.c): nonzero serial of the
     * object the record was made from (at any depth of a message sent
     * through a channel with identity on), and the sender's id() of it. */
    uint64_t serial;
    uintptr_t origin;
    TpShare_Data data;
};

/* Payload memory for built-in handlers: n bytes for `data` of a record
 * being shared, in the cache line after the record when n <= 64 and its
 * block has that line, else a block of TPS_SMALL_MAX bytes from a
 * per-thread cache (not malloc).
 * NULL when n is larger (use PyMem_RawMalloc) or memory is exhausted (no
 * exception set).  The record frees the block itself; the hooks' free
 * sees data->ptr NULL. */
#define TPS_SMALL_MAX 128
void *tps_small_alloc(TpShare_Data *data, Py_ssize_t n);
struct tps_identity;

/* Share `obj` (borrowed) into a new record (one reference for the
 * caller).  NULL with an exception on failure; nothing kept. */
TpShare_Record *tps_share(PyObject *obj);
/* The same with the given registration instead of the registry's. */
TpShare_Record *tps_share_with(PyObject *obj, tps_entry *entry);
/* tps_share() when the caller knows the current interpreter's ID; with
 * `id` (the current interpreter's identity table, or NULL) every record
 * of the message made from an immutable object is tagged with its serial
 * (a channel with identity on). */
TpShare_Record *tps_share_in(PyObject *obj, int64_t owner,
                             struct tps_identity *id);
/* New reference or NULL with an exception.  `rec` borrowed. */
PyObject *tps_rebuild(TpShare_Record *rec);
/* tps_rebuild() that first looks every tagged record of the message up in
 * `id` (the current interpreter's identity table), and remembers what it
 * rebuilds for them.  New reference or NULL with an exception. */
PyObject *tps_rebuild_with_identity(TpShare_Record *rec,
                                    struct tps_identity *id);
void tps_record_incref(TpShare_Record *rec);
void tps_record_release(TpShare_Record *rec);
/* Free a record whose refcount is zero, in the current interpreter (the
 * owner, or any for a neutral record). */
void tps_record_free(TpShare_Record *rec);
int tps_is_shareable(PyObject *obj);
/* Whether obj rebuilds as the very same object anyway (None, True,
 * False, small ints). */
int tps_rebuilds_identical(PyObject *obj);
/* For container hooks: the index of the item about to be shared. */
void tps_share_set_index(Py_ssize_t index);
/* The identity memos' tables allocated in all threads and not yet
 * freed, for tests. */
long tps_memo_tables(void);

/* Hold `rec` on behalf of an object of the current interpreter; counted
 * as a remote holder when the current interpreter is not the owner. */
void tps_record_hold(TpShare_Record *rec, int64_t holder);
void tps_record_unhold(TpShare_Record *rec, int64_t holder);

/* A record goes into a channel or the token table, which takes over a
 * reference: counted in its owner's `queued` (owner-bound records only)
 * until the receiver that takes it out is done with it and calls
 * tps_record_queue_release() (which drops that reference too).
 * tps_record_queue_leave() undoes an enter whose record did not go in
 * (the caller keeps its reference).  Any thread, no GIL needed. */
void tps_record_queue_enter(TpShare_Record *rec);
void tps_record_queue_leave(TpShare_Record *rec);
void tps_record_queue_release(TpShare_Record *rec);

/* A neutral record with the same value as `rec` (owner-bound, owned by
 * the current interpreter): a new reference, or NULL without an
 * exception when its value may change (a view of the owner's memory) or
 * the copy failed.  Copies bytes, pickled items and immutable values
 * (tuples of them...) out of the owner; used at the owner's exit for the
 * items it leaves queued.  Needs the owner's GIL. */
TpShare_Record *tps_record_neutral_copy(TpShare_Record *rec);
/* Whether hooks must copy rather than keep a reference to the sender's
 * object (bytes: see tps_bytes_threshold): set while
 * tps_record_neutral_copy() shares. */
int tps_share_must_copy(void);

/* ---------------------------------------------------------------------
 * Release trackers (src/tracker.c).
 */

typedef struct tps_tracker tps_tracker;

/* A tracker for records shared by the current interpreter (one
 * reference), or NULL with MemoryError. */
tps_tracker *tps_tracker_new(tps_interp *st);
void tps_tracker_incref(tps_tracker *t);
void tps_tracker_decref(tps_tracker *t);
/* Mark released and wake the owner's parked threads; any thread. */
void tps_tracker_fire(tps_tracker *t);
/* A new Python Tracker (new reference) holding `t` (borrowed). */
PyObject *tps_tracker_wrap(tps_module_state *state, tps_tracker *t);
int tps_tracker_init_type(PyObject *module, tps_module_state *state);

/* Parse a timeout argument (borrowed; NULL or None: forever, -1) into
 * nanoseconds.  0, or -1 with ValueError (negative, NaN) or TypeError. */
int tps_parse_timeout(PyObject *arg, int64_t *ns);

/* The exported C API table (src/module.c). */
extern const TpShare_CAPI tps_capi;

/* ---------------------------------------------------------------------
 * The channel core (src/chancore.c).
 */

/* Error codes of code that runs without the GIL or for another
 * interpreter; converted to exceptions by tps_raise_error(). */
#define TPS_ERR_PYTHON  -1   /* an exception is already set */
#define TPS_ERR_CLOSED  -2
#define TPS_ERR_EMPTY   -3   /* timed out waiting for an item */
#define TPS_ERR_FULL    -4   /* timed out waiting for room */
#define TPS_ERR_NOMEM   -5
#define TPS_ERR_SIGNAL  -6   /* a signal handler raised: exception set */
#define TPS_ERR_EXITING -7   /* the waiter's interpreter is being stopped
                                at exit (tps_interp_stop) */
#define TPS_ERR_FORKED  -8   /* the channel was created before fork() and
                                this is the child */

typedef struct tps_channel tps_channel;

/* Channel options, fixed at creation (the object layer reads them). */
#define TPS_CHAN_IDENTITY 0x1u   /* identity across messages (D9) */
#define TPS_CHAN_PICKLE   0x2u   /* pickle what is not shareable */
/* Bits 2-3: TPS_UNBOUND_*, the channel's unbounditems. */
#define TPS_CHAN_UNBOUND_SHIFT 2
#define TPS_CHAN_UNBOUND_MASK (0x3u << TPS_CHAN_UNBOUND_SHIFT)

/* A new channel with one reference, or NULL with MemoryError.  maxsize 0
 * means unbounded; spin_ns is how long a waiter spins before parking. */
tps_channel *tps_channel_new(Py_ssize_t maxsize, int64_t spin_ns,
                             unsigned int flags);
unsigned int tps_channel_flags(const tps_channel *ch);
/* The channel with this ID, with a new reference, or NULL. */
tps_channel *tps_channel_lookup(int64_t id);
void tps_channel_incref(tps_channel *ch);
/* The last reference releases every queued record; any thread, no GIL
 * needed. */
void tps_channel_decref(tps_channel *ch);
int64_t tps_channel_id(const tps_channel *ch);
Py_ssize_t tps_channel_maxsize(const tps_channel *ch);
Py_ssize_t tps_channel_count(tps_channel *ch);
int tps_channel_is_closed(tps_channel *ch);
void tps_channel_close(tps_channel *ch);
/* sent, received, dropped (owner-bound items of an exited sender), and
 * the sends and receives that parked. */
void tps_channel_counters(tps_channel *ch, uint64_t out[5]);
/* Queue n records (the channel takes over the caller's references on
 * success; on failure the caller keeps them).  All or nothing: a batch
 * waits until it fits (or the channel is empty).  With the GIL; released
 * while waiting; timeout_ns < 0 waits forever.  0 or TPS_ERR_*. */
int tps_channel_send(tps_channel *ch, TpShare_Record *const *recs,
                     Py_ssize_t n, int64_t timeout_ns);
/* Take 1..max records (the caller gets their references) into out.
 * 0 or TPS_ERR_*. */
int tps_channel_recv(tps_channel *ch, TpShare_Record **out, Py_ssize_t max,
                     Py_ssize_t *got, int64_t timeout_ns);
/* Put records taken by recv back at the head, in order (a receiver that
 * took a batch and stopped at an item it could not rebuild gives back
 * those behind it).  0 or TPS_ERR_NOMEM (caller keeps them). */
int tps_channel_unrecv(tps_channel *ch, TpShare_Record *const *recs,
                       Py_ssize_t n);
/* The owner's exit hook (runs in it, under its GIL): its owner-bound
 * items still queued in any channel are replaced, in place, by neutral
 * copies, or by what the unbounditems policy says. */
void tps_channels_forget_interp(int64_t interp);
/* Wake every thread parked in a channel wait, in every interpreter (a
 * spurious wake-up for those that go on waiting).  Any thread. */
void tps_channels_wake_all(void);
/* For tests: take (take != 0) or release the lock of channel `id` from
 * the calling thread, as a thread inside a channel operation holds it.
 * 0, or -1 when there is no such channel. */
int tps_channel_test_lock(int64_t id, int take);

/* ---------------------------------------------------------------------
 * Python-visible types and errors (src/module.c, shared.c, view.c).
 */

/* Raise NotShareableError (formatted like PyErr_Format) in the current
 * interpreter. */
void tps_set_not_shareable(const char *format, ...);

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

/* identity.c: identity of objects sent more than once (D9). */
typedef struct tps_identity tps_identity;
tps_identity *tps_identity_new(void);
/* Drop every reference (with the GIL of the interpreter it belongs to). */
void tps_identity_free(tps_identity *id);
/* Sender: tag `rec` (TPS_REC_IMMUTABLE, at any depth of a message, not
 * yet tagged) with the serial of `obj` (borrowed; kept alive by the
 * sender's bounded ring), unless obj is too big to track or rebuilds as
 * itself anyway.  0 or -1 with MemoryError.  With the GIL. */
int tps_identity_tag(tps_identity *id, TpShare_Record *rec, PyObject *obj);
/* Receiver: the object already rebuilt here for rec's serial (new
 * reference), or NULL without an exception. */
PyObject *tps_identity_lookup(tps_identity *id, TpShare_Record *rec);
/* Receiver: remember `obj` (borrowed) as the rebuild of rec (tagged); a
 * no-op when the tables are full of objects the receiver still holds. */
void tps_identity_remember(tps_identity *id, TpShare_Record *rec,
                           PyObject *obj);
/* The sender's id() of a received object, or -1 if unknown. */
Py_ssize_t tps_identity_origin(tps_identity *id, PyObject *obj);

/* buffer_type.c: tpshare.Buffer, memory of no interpreter. */
int tps_buffer_init_type(PyObject *module, tps_module_state *state);

/* channel.c: the Channel and MemChannel types. */
int tps_channel_init_types(PyObject *module, tps_module_state *state);
/* Raise the exception for a TPS_ERR_* code (no-op for TPS_ERR_PYTHON and
 * TPS_ERR_SIGNAL, whose exception is set).  Returns NULL. */
PyObject *tps_raise_error(tps_module_state *state, int code);
/* A neutral record standing for an item that could not be delivered
 * (policy TPS_UNBOUND_MARK or TPS_UNBOUND_ERROR): it rebuilds as
 * tpshare.UNBOUND or raises ItemInterpreterDestroyed.  New reference, or
 * NULL with an exception.  Needs a GIL. */
TpShare_Record *tps_unbound_marker(unsigned int policy);

/* ---------------------------------------------------------------------
 * Interpreters made by tpshare (src/interpreter.c).
 */

/* Add the functions _interp_start, _interp_run, _interp_interrupt,
 * _interp_abandon, _interp_end and _interp_list, used by
 * tpshare/_interpreters.py, to `module` (borrowed).  0 or -1. */
int tps_interpreters_init(PyObject *module);

/* ---------------------------------------------------------------------
 * fork() (src/fork.c).
 */

/* Register the fork handlers (once per process) and add the test hook
 * _hold_channel_lock to `module` (borrowed).  0 or -1. */
int tps_fork_init(PyObject *module);

/* The phases of a fork, for the handlers of each file that owns
 * process-wide state: PREPARE (the forking thread, before the fork) takes
 * the file's leaf mutexes, so that the child gets the state they guard
 * consistent; PARENT releases them; CHILD (the only thread of the child)
 * re-initializes every lock, owned or not, and makes what belonged to the
 * parent's other threads and interpreters unusable.  CHILD runs before
 * CPython's own fork handling: no Python API, no allocation. */
typedef enum {
    TPS_FORK_PREPARE,
    TPS_FORK_PARENT,
    TPS_FORK_CHILD,
} tps_fork_phase;

void tps_registry_atfork(tps_fork_phase phase);   /* registry/registry.c */
void tps_blocks_atfork(tps_fork_phase phase);     /* blocks.c */
void tps_interps_atfork(tps_fork_phase phase);    /* owner.c */
void tps_channels_atfork(tps_fork_phase phase);   /* chancore.c */
void tps_tokens_atfork(tps_fork_phase phase);     /* shared.c */
void tps_workers_atfork(tps_fork_phase phase);    /* interpreter.c */

/* ---------------------------------------------------------------------
 * Small helpers.
 */

/* Assert that a pthread mutex is held (where the caller's contract says
 * it holds it: trylock then fails). */
#define TPS_ASSERT_LOCKED(m) assert(pthread_mutex_trylock(m) == EBUSY)

static inline int64_t
tps_current_interp_id(void)
{
    return PyInterpreterState_GetID(PyInterpreterState_Get());
}

#endif /* TPSHARE_INTERNAL_H */
