/* chancore.h - the channel core (chancore.c, chanexit.c): FIFOs of
 * records between interpreters, with waits, close and counters.
 */
#ifndef TPSHARE_CHANCORE_H
#define TPSHARE_CHANCORE_H

#ifndef TPSHARE_BUILD_CORE
#error "chancore.h is internal to tpshare"
#endif

#include "common.h"
#include "record.h"

typedef struct tps_channel tps_channel;

/* Channel options, fixed at creation (the object layer reads them). */
#define TPS_CHAN_IDENTITY 0x1u   /* identity across messages */
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
/* Makes the record that takes the place of such an item under policy
 * TPS_UNBOUND_MARK or TPS_UNBOUND_ERROR: a new reference, or NULL with an
 * exception; runs under the exiting interpreter's GIL.  Installed by the
 * layer above (unbound.c) when it sets up, before any channel is made,
 * so that the channel core knows nothing of the markers' type. */
typedef TpShare_Record *(*tps_unbound_maker)(unsigned int policy);
void tps_channels_set_unbound_maker(tps_unbound_maker fn);
/* Wake every thread parked in a channel wait, in every interpreter (a
 * spurious wake-up for those that go on waiting).  Any thread. */
void tps_channels_wake_all(void);
/* For tests: take (take != 0) or release the lock of channel `id` from
 * the calling thread, as a thread inside a channel operation holds it.
 * 0, or -1 when there is no such channel. */
int tps_channel_test_lock(int64_t id, int take);

#endif /* TPSHARE_CHANCORE_H */
