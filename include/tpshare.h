/* tpshare.h - the public C API of tpshare.
 *
 * This is the only header a third-party extension includes to make its
 * types cross between CPython subinterpreters.  It declares the hook record
 * that prototypes the `tp_share` slot (TpShare_Hooks), the data a hook fills
 * in (TpShare_Data), and a versioned table of functions (TpShare_CAPI) that
 * tpshare exports as the capsule "tpshare._C_API".
 *
 * Usage: hooks are initialised with TPSHARE_HOOKS_INIT (it fills in the ABI
 * version and the struct's size), then registered from the extension's
 * Py_mod_exec function:
 *
 *     static const TpShare_Hooks my_hooks = {
 *         TPSHARE_HOOKS_INIT,
 *         .flags = TPSHARE_COPIES,
 *         .name = "mypackage.MyType",
 *         .share = my_share,
 *         .rebuild = my_rebuild,
 *     };
 *
 *     if (TpShare_IMPORT() < 0) {
 *         return -1;
 *     }
 *     if (TpShare_API->Register(type, &my_hooks, 0) < 0) {
 *         return -1;
 *     }
 *
 * The table holds no PyObject*, so one static table serves every
 * interpreter; the pointer TpShare_IMPORT() stores is valid process-wide.
 *
 * Ownership words used below: "borrowed" (the callee neither keeps nor
 * releases the reference), "new reference" (the caller owns the result).
 * No function of this API steals an argument or returns a borrowed result.
 */
#ifndef TPSHARE_H
#define TPSHARE_H

#include <Python.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of the structs or the table below.
 * Growth at the end of TpShare_CAPI or TpShare_Hooks (each checked through
 * its `size` field) is not an incompatible change.  Extensions never
 * define it themselves; the test suite does, to check that a mismatch
 * fails cleanly.  Version 2 added TpShare_Hooks.size. */
#ifndef TPSHARE_ABI_VERSION
#define TPSHARE_ABI_VERSION 2
#endif

#define TPSHARE_CAPSULE_NAME "tpshare._C_API"

/* ---------------------------------------------------------------------
 * The data one shared value carries.
 *
 * A share hook fills a TpShare_Data that tpshare zeroed beforehand.  The
 * struct lives in raw, interpreter-neutral memory owned by tpshare; the
 * hook owns what it points `ptr` at, and tpshare owns the reference in
 * `obj`.
 */
typedef struct TpShare_Data {
    /* Payload in raw memory (PyMem_RawMalloc or TpShare_API->Malloc).
     * Allocated by the share hook; freed by the free hook, or, when the
     * hooks have no free hook, by tpshare with PyMem_RawFree.  May be
     * NULL.  Readable from any interpreter. */
    void *ptr;
    /* Hook-defined size or count; tpshare only reports it. */
    Py_ssize_t size;
    /* Optional strong reference to an object of the SENDING interpreter
     * that must stay alive while the data is used (for example the object
     * whose memory `ptr` points into).  Set by the share hook (it passes
     * its own new reference); tpshare releases it in the owner interpreter
     * after the free hook ran.  The receiver must never touch the object
     * itself, only memory it owns that cannot change.  Setting it makes
     * the data owner-bound. */
    PyObject *obj;
    /* TPSHARE_DATA_* flags, set by the share hook. */
    uint32_t flags;
    /* Free for the hook's own use (tpshare never reads it). */
    uint32_t aux;
    /* Small payloads stored in place: no allocation, no free needed. */
    union {
        int64_t i64[2];
        double f64[2];
        void *ptr[2];
        unsigned char bytes[16];
    } inline_data;
} TpShare_Data;

/* The free hook must run in the owner interpreter under its GIL even
 * though `obj` is NULL (the data holds something else of the owner's,
 * for example a Py_buffer export). */
#define TPSHARE_DATA_OWNER_BOUND 0x1u

/* An opaque, interpreter-neutral share record: one shared value with its
 * registration, its owner interpreter and its data.  Records are
 * refcounted internally; whoever obtains one from Share() releases it
 * once with Release(). */
typedef struct TpShare_Record TpShare_Record;

/* ---------------------------------------------------------------------
 * The hook record: the prototype of a `tp_share` slot.
 */

/* share: turn `obj` into `data`.
 *   Runs in the SENDING interpreter, under its GIL.
 *   obj: borrowed; the hook must not modify it.
 *   data: zeroed by tpshare before the call; filled by the hook.
 *   Returns 0 on success, -1 with an exception set on failure.  On failure
 *   the hook must have released whatever it put in `data` (tpshare frees
 *   nothing of a failed share).  The hook may share contained objects with
 *   TpShare_API->Share (keeping the returned records in its payload); they
 *   join the same message, so an object met twice is shared once. */
typedef int (*TpShare_ShareFunc)(PyObject *obj, TpShare_Data *data);

/* rebuild: make a new object from `data`.
 *   Runs in the RECEIVING interpreter, under its GIL, possibly many times
 *   for one record and possibly in several interpreters at once: it must
 *   only read `data`.
 *   type: borrowed; the receiving interpreter's own registered type (for
 *   a heap type, the receiver's class of the same registration name).
 *   Returns a new reference, or NULL with an exception set.  Unless the
 *   hooks carry TPSHARE_ANY_RESULT the result must be an instance of
 *   `type`. */
typedef PyObject *(*TpShare_RebuildFunc)(PyTypeObject *type,
                                         const TpShare_Data *data);

/* free: release what share took.
 *   Runs once, when the last holder of the record lets go.  If the data is
 *   owner-bound (`obj` set, or TPSHARE_DATA_OWNER_BOUND, or it holds an
 *   owner-bound nested record) it runs in the OWNER interpreter under its
 *   GIL; otherwise it may run in any interpreter or in a thread holding no
 *   GIL at all, and must not touch Python objects (Release and Free are
 *   safe there).  Must not fail and must not raise.  May be NULL: then
 *   tpshare frees `ptr` with PyMem_RawFree.  tpshare releases `obj` after
 *   this hook returns. */
typedef void (*TpShare_FreeFunc)(TpShare_Data *data);

/* Hook flags (TpShare_Hooks.flags). */
#define TPSHARE_COPIES      0x1u  /* the receiver gets a copy */
#define TPSHARE_ZERO_COPY   0x2u  /* the receiver sees the sender's memory */
#define TPSHARE_SUBCLASSES  0x4u  /* also used for subclasses (MRO walk) */
#define TPSHARE_ANY_RESULT  0x8u  /* rebuild may return another type */
#define TPSHARE_IMMUTABLE   0x10u /* instances never change: a receiver may
                                     reuse the object it rebuilt when the
                                     same object is sent again, instead of
                                     rebuilding it */
#define TPSHARE_BRIDGE      0x20u /* Register() also lets instances cross
                                     CPython's own interpreter machinery
                                     (its queues, channels, prepare_main)
                                     as tpshare records: see Bridge() */
#define TPSHARE_SELF_CONTAINED 0x40u /* the data can cross processes
                                     (tpshare.shm.Channel): the share hook
                                     fills only inline_data, size, aux and
                                     `ptr` pointing at `size` bytes that
                                     hold no pointer, no reference and no
                                     nested record; no obj, not
                                     TPSHARE_DATA_OWNER_BOUND.  rebuild
                                     then reads bytes another process
                                     wrote: it checks every length and
                                     offset it finds there */

/* Growth rule: new fields are only ever added at the end, and a zero new
 * field means "as before".  `size` tells tpshare which fields the caller
 * knows: Register() refuses a size below the first version's (0 included:
 * the caller forgot TPSHARE_HOOKS_INIT), reads only `size` bytes, and
 * accepts a size above its own only if the bytes it does not know are all
 * zero (an extension built against a newer header that uses none of the
 * newer fields still registers). */
typedef struct TpShare_Hooks {
    /* Must be TPSHARE_ABI_VERSION; Register() refuses anything else. */
    uint32_t abi_version;
    /* sizeof(TpShare_Hooks) as the caller compiled it. */
    uint32_t size;
    /* TPSHARE_COPIES | TPSHARE_ZERO_COPY | TPSHARE_SUBCLASSES | ... */
    uint32_t flags;
    /* Stable registration name, "package.Type".  Required.  Copied by
     * Register(); the receiver finds its own registration by this name. */
    const char *name;
    /* Required. */
    TpShare_ShareFunc share;
    /* Required. */
    TpShare_RebuildFunc rebuild;
    /* Optional (NULL: PyMem_RawFree(data->ptr)). */
    TpShare_FreeFunc free;
} TpShare_Hooks;

/* The first members of every TpShare_Hooks initialiser, in C and in C++20:
 *     TpShare_Hooks h = {TPSHARE_HOOKS_INIT, .flags = ..., ...};
 * Code that fills a struct at run time sets the same two fields. */
#define TPSHARE_HOOKS_INIT \
    .abi_version = TPSHARE_ABI_VERSION, .size = sizeof(TpShare_Hooks)

/* Register() flags. */
#define TPSHARE_REPLACE 0x1u  /* replace an existing registration */

/* ---------------------------------------------------------------------
 * The function table.  Every function needs the caller to hold the GIL
 * of some interpreter (an attached thread state), except Malloc/Free.
 */
typedef struct TpShare_CAPI {
    /* TPSHARE_ABI_VERSION of the tpshare that exported the table. */
    uint32_t abi_version;
    /* sizeof(TpShare_CAPI) of the tpshare that exported the table. */
    uint32_t size;

    /* Register `hooks` for `type`.  A static type is registered once for
     * the whole process; a heap type only for the current interpreter (do
     * it from Py_mod_exec), and the registration goes away with the type.
     * hooks: borrowed; copied, including the name.
     * Returns 0, or -1 with an exception: ValueError if the type is
     * already registered (and TPSHARE_REPLACE was not given), if the name
     * is already used for another type in this scope, or if the hooks are
     * incomplete, of another ABI version or of a size it cannot accept
     * (see TpShare_Hooks); TypeError if type is NULL. */
    int (*Register)(PyTypeObject *type, const TpShare_Hooks *hooks,
                    unsigned int flags);

    /* Remove the registration of `type` (borrowed) in the scope where it
     * was made.  Returns 0, or -1 with KeyError if it is not registered.
     * Records already made keep working. */
    int (*Unregister)(PyTypeObject *type);

    /* Copy the hooks that would share instances of `type` (borrowed)
     * into *out: its own registration, a base's that accepts subclasses,
     * or the buffer fallback.  The caller initialises *out with
     * TPSHARE_HOOKS_INIT first, so that a tpshare with a bigger struct
     * writes only the fields the caller knows.  out->name stays valid
     * until the current interpreter next calls into tpshare.  Returns 1 if found, 0 if not,
     * -1 with an exception on error. */
    int (*Lookup)(PyTypeObject *type, TpShare_Hooks *out);

    /* Whether `obj` (borrowed) can be shared, checked deeply (a tuple
     * holding a list is not).  Returns 1 or 0; -1 with an exception only
     * on errors other than "not shareable". */
    int (*IsShareable)(PyObject *obj);

    /* Share `obj` (borrowed) into a new record owned by the caller.
     * Returns NULL with NotShareableError (a TypeError) naming the type
     * and its position, or with the exception a hook raised.  Nothing is
     * kept on failure.  Called from inside a share hook, the record joins
     * the message being built. */
    TpShare_Record *(*Share)(PyObject *obj);

    /* Build the value of `rec` (borrowed) in the current interpreter.
     * Returns a new reference, or NULL with an exception set (for example
     * LookupError when the receiver has no registration of that name).
     * The record stays owned by the caller. */
    PyObject *(*Rebuild)(TpShare_Record *rec);

    /* Give up the caller's hold on `rec`.  When the last hold goes, the
     * record is freed: in the current interpreter if it is the owner or
     * the data is not owner-bound, otherwise through the owner's release
     * list.  Never fails.  May be called without any GIL (for example
     * from a free hook of neutral data). */
    void (*Release)(TpShare_Record *rec);

    /* The ID of the interpreter that made `rec`. */
    int64_t (*Owner)(const TpShare_Record *rec);

    /* Raw, interpreter-neutral memory, usable without a GIL: these are
     * PyMem_RawMalloc and PyMem_RawFree (so a NULL free hook frees memory
     * from Malloc correctly).  Malloc sets no exception on failure. */
    void *(*Malloc)(size_t n);
    void (*Free)(void *p);

    /* Grown at the end within ABI version 2 (TpShare_IMPORT() refuses a
     * tpshare whose table is smaller than the one compiled against). */

    /* Share `obj` (borrowed), item `index` of the object the running
     * share hook shares, into a new record owned by the caller: Share()
     * that also tells tpshare where the item sits, so that an error names
     * the path to what could not be shared ("found at mytype[2] >
     * tuple[0]").  index >= 0; outside a share hook it is ignored.
     * Returns NULL with an exception like Share(). */
    TpShare_Record *(*ShareItem)(PyObject *obj, Py_ssize_t index);

    /* Whether the share in progress must not keep the sender's memory:
     * 1 while tpshare re-shares a TPSHARE_IMMUTABLE value whose owner
     * interpreter is exiting, to give its receivers a private copy.  A
     * share hook that would set data->obj or TPSHARE_DATA_OWNER_BOUND to
     * avoid a copy (a big immutable payload) copies instead when it
     * returns 1; a hook that cannot copy may refuse, and the value is
     * then lost as its channel's unbounditems say.  (The owner's modules
     * are finalized by then: only a type registered process-wide, a
     * static type, is still found to re-share.)  Returns 1 or 0, never
     * fails; call it from a share hook. */
    int (*MustCopy)(void);

    /* Payload memory that lives as long as the record: `n` bytes
     * (aligned for any type) for `data`, the TpShare_Data tpshare passed
     * to the running share hook.  On success it sets data->ptr to the
     * memory and returns it; tpshare frees it with the record and the
     * free hook (if any) then sees data->ptr NULL, so it suits plain
     * copies that need no walking when freed.  Returns NULL, with no
     * exception and `data` unchanged, when n is above
     * TPSHARE_DATA_ALLOC_MAX, when data->ptr is already set or when no
     * such memory is left: the hook then allocates with Malloc.  Faster
     * than Malloc (no malloc call: a per-thread cache of blocks of size
     * classes, or the cache line after the record), above all when the
     * receiver, another thread, frees the record. */
    void *(*DataAlloc)(TpShare_Data *data, size_t n);

    /* Let instances of `type` (borrowed), registered with tpshare, cross
     * CPython's own interpreter machinery: prepare_main() and exec's
     * shared namespace of its interpreters module, its queues and
     * channels.  They travel as tpshare share records (no pickling) and
     * are rebuilt by the receiver's registration of the same name.
     * CPython keeps heap types per interpreter, so call it (or register
     * with TPSHARE_BRIDGE) in every interpreter that sends them.  Exact
     * type only (CPython's lookup ignores subclasses).  Returns 0, or -1
     * with TypeError when tpshare has no hooks for the type. */
    int (*Bridge)(PyTypeObject *type);
} TpShare_CAPI;

/* The largest payload DataAlloc() serves (16 KiB). */
#define TPSHARE_DATA_ALLOC_MAX 16384

/* ---------------------------------------------------------------------
 * Importing the table.
 *
 * TpShare_IMPORT() imports tpshare in the current interpreter (call it
 * from every interpreter's Py_mod_exec: tpshare keeps per-interpreter
 * state), fetches the capsule and checks the ABI version.  Returns 0, or
 * -1 with ImportError naming both versions on a mismatch.  It stores the
 * table in TpShare_API, one static per translation unit that includes
 * this header; every interpreter stores the same address.
 */
static const TpShare_CAPI *TpShare_API = NULL;

static inline int
TpShare_Import(void)
{
    const TpShare_CAPI *api;

    api = (const TpShare_CAPI *)PyCapsule_Import(TPSHARE_CAPSULE_NAME, 0);
    if (api == NULL) {
        return -1;
    }
    if (api->abi_version != TPSHARE_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "tpshare ABI mismatch: this extension was built "
                     "for ABI version %d, the installed tpshare "
                     "provides version %u",
                     TPSHARE_ABI_VERSION, (unsigned int)api->abi_version);
        return -1;
    }
    if (api->size < sizeof(TpShare_CAPI)) {
        PyErr_Format(PyExc_ImportError,
                     "tpshare ABI mismatch: function table of %u bytes, "
                     "this extension needs %u",
                     (unsigned int)api->size,
                     (unsigned int)sizeof(TpShare_CAPI));
        return -1;
    }
    if (TpShare_API == NULL) {
        TpShare_API = api;
    }
    return 0;
}

#define TpShare_IMPORT() TpShare_Import()

#ifdef __cplusplus
}
#endif

#endif /* TPSHARE_H */
