/* tpshare_internal.h - the top header of tpshare's core: every internal
 * header, the layers they form and the process-wide state.
 *
 * Layers, bottom up (each calls only the ones below it, except where
 * said; an upper layer that must be told of something installs a
 * callback below):
 *   common.h, compat.h, cacheline.h, spinlock.h, waiter.h, ptrmap.h,
 *     blocks.h        tools: no Python objects, no tpshare concepts;
 *   registry.h        the type registry (registry/registry.c, lookup.c,
 *                     entry.c, registry_list.c): registrations hold the
 *                     hooks of the layers above (built-in handlers and
 *                     third-party extensions), which records call;
 *   record.h, identity.h   share records: share and rebuild (record.c),
 *                     hold and release (record_release.c), the error
 *                     for what cannot be shared (not_shareable.c), identity
 *                     across sends (identity.c, used by record.c when a
 *                     channel has identity on);
 *   owner.h           the owner side: per-interpreter state, release
 *                     lists, exit (owner.c, owner_exit.c); records push
 *                     to it and it frees records: the one pair of layers
 *                     that call each other;
 *   capi.h            the public C API table, TpShare_CAPI (capi.c): the
 *                     registry's and the records' functions, as other
 *                     extensions get them (capsule tpshare._C_API);
 *   registry/handlers.h   the built-in handlers (registry/handlers_*.c):
 *                     above the public API, they call only through the
 *                     table's members (nested items, must-copy, small
 *                     payload memory, registration), never records or
 *                     the owner side; registered from module init
 *                     (module.c) through Register; what they offer below
 *                     (the pickle and buffer fallback entries, the
 *                     buffer view hook view.c installs) is in registry.h;
 *   chancore.h, ring.h, tracker.h   channels of records (chancore.c,
 *                     chanexit.c, ring.c), release trackers (told of a
 *                     freed record through a hook they install); an
 *                     exiting sender's items become markers made by a
 *                     hook that unbound.c installs; item.h: a ring slot
 *                     holds a record or an immediate item (small values
 *                     with no record, made and rebuilt by immediate.c);
 *   pytypes.h, module_state.h, fork.h, channel.h, module.h   the
 *                     Python-visible types and functions: the module
 *                     (module.c, functions.c), channel handles
 *                     (channel.c, handle_io.c, handle_share.c, args.c),
 *                     the object layer (objlayer.c, immediate.c),
 *                     unbound-item markers
 *                     (unbound.c), shared.c, view.c, buffer_type.c,
 *                     interpreters made by tpshare (interpreter.c, on
 *                     the table and threads of workers.c), fork(), and
 *                     the handles and bridged types in CPython's own
 *                     cross-interpreter machinery (cpython_xid.c, the one
 *                     file on that private API), and the two private
 *                     functions that carry TPSHARE_SELF_CONTAINED types
 *                     between processes for tpshare.shm (crossproc.c).
 *
 * A separate extension module, tpshare._shm (tpshare.shm: channels
 * between processes in a shared memfd segment), is built from
 * src/shm_*.c with shm.h and shm_py.h (shm.h's top comment is its map:
 * shm_seg.c layout, lock, allocator and ring; shm_repair.c dead peers
 * and repair; shm_handle.c, shm_chan.c, shm_objs.c the Python types).
 * It shares no code and no state with this core: it imports
 * tpshare._tpshare for its exceptions, and the Python layer
 * (src/tpshare/shm.py) calls crossproc.c for registered types.
 *
 * Process-wide state (file-scope, shared by every interpreter), the lock
 * that guards it, and whether it holds PyObject*:
 *   tps_registry (registry.c)  its mutex; no PyObject* (types are
 *                            pointers, not references);
 *   fast (lookup.c)          written under tps_registry.mutex, read
 *                            atomically; no PyObject*;
 *   tps_pickle_entry, tps_buffer_entry, tps_buffer_writable_entry
 *                            (registry/handlers_*.c) set once at set-up;
 *                            no PyObject*;
 *   depots (blocks.c)        each depot's mutex; raw memory only;
 *   interps (owner.c)        interps.mutex; no PyObject* usable from
 *                            another interpreter (a state's module is
 *                            touched under its owner's GIL only);
 *   channels (chancore.c)    channels.mutex, then each channel's lock;
 *                            records and raw memory only;
 *   tokens (shared.c)        tokens.mutex; records only;
 *   tps_workers (workers.c)  its mutex; see workers.c;
 *   next_serial (identity.c), memo_tables (record.c),
 *   process_exiting (owner_exit.c)
 *                            atomics; no PyObject*;
 *   record_freed (record_release.c), view_maker (handlers_export.c),
 *   unbound_maker (chanexit.c)
 *                            hooks installed by the layer above, atomic
 *                            function pointers; no PyObject*.
 *
 * Naming: non-static internals start with tps_; static helpers have no
 * prefix and no two files share one's name.  Interpreters are named by
 * ID (int64_t), never by a stored PyInterpreterState*.  Code under raw
 * locks returns negative TPS_ERR_* codes instead of raising.
 */
#ifndef TPSHARE_INTERNAL_H
#define TPSHARE_INTERNAL_H

#ifndef TPSHARE_BUILD_CORE
#error "tpshare_internal.h is internal to tpshare; include tpshare.h instead"
#endif

#include "common.h"
#include "cacheline.h"
#include "blocks.h"
#include "registry.h"
#include "module_state.h"
#include "owner.h"
#include "record.h"
#include "capi.h"
#include "tracker.h"
#include "chancore.h"
#include "identity.h"
#include "pytypes.h"
#include "fork.h"

#endif /* TPSHARE_INTERNAL_H */
