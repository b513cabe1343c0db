/* chancore_layout.h - the fields of a channel, for the channel core's
 * two files only: chancore.c (life cycle, waits, close, counters, fork)
 * and chanexit.c (an exiting sender's items).  Everything else reaches a
 * channel through the functions of tpshare_internal.h.
 */
#ifndef TPSHARE_CHANCORE_LAYOUT_H
#define TPSHARE_CHANCORE_LAYOUT_H

#ifndef TPSHARE_BUILD_CORE
#error "chancore_layout.h is internal to tpshare"
#endif

#include "cacheline.h"
#include "chancore.h"
#include "ring.h"
#include "spinlock.h"
#include "waiter.h"

struct tps_channel {
    /* Read on every operation, written rarely: a line of their own. */
    int64_t id;
    long refcnt;                 /* guarded by channels.mutex */
    Py_ssize_t maxsize;          /* 0: unbounded */
    int64_t spin_ns;             /* < 0: adaptive (waiter.h) */
    unsigned int flags;          /* TPS_CHAN_*, fixed at creation */
    atomic_int closed;           /* OPEN, CLOSED or FORKED (chancore.c) */
    /* Written by both sides on every operation: one line, so that an
     * operation moves one line between the two sides' CPUs (the
     * counters had a line of their own, which moved too). */
    _Alignas(TPS_LINE) tps_lock lock;  /* guards everything below */
    /* The CPU each side last completed an operation on, read lock-free
     * by the other side's spinner (waiter.h). */
    atomic_int cpu[2];
    tps_ring ring;               /* its count is read lock-free */
    uint64_t sent, received;
    /* Read on every operation, written when a side parks or wakes. */
    _Alignas(TPS_LINE) tps_wlist receivers;
    tps_wlist senders;
    uint64_t dropped;
    uint64_t parked[2];          /* waits that parked, per direction */
};

/* After items left the ring: wake senders once below the low-water
 * mark (lock held). */
void tps_channel_wake_senders(tps_channel *ch);

/* Every channel of the table, each with a new reference, in a raw array
 * the caller frees (PyMem_RawFree) with *n set; NULL on memory failure. */
tps_channel **tps_channels_hold_all(size_t *n);

#endif /* TPSHARE_CHANCORE_LAYOUT_H */
