/* spinlock.h - a spinning lock for short critical sections.
 *
 * The lock of a channel's ring and wait lists (chancore.c), with the two
 * primitives it spins with: a CPU pause hint and the monotonic clock its
 * timed acquire reads.  waiter.h builds its spinning on the same two.
 */
#ifndef TPSHARE_SPINLOCK_H
#define TPSHARE_SPINLOCK_H

#ifndef TPSHARE_BUILD_CORE
#error "spinlock.h is internal to tpshare"
#endif

#include "common.h"

#include <assert.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds. */
static inline int64_t
tps_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
#define tps_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define tps_cpu_relax() __asm__ __volatile__("yield")
#else
#define tps_cpu_relax() ((void)0)
#endif

/* A lock for critical sections of a few dozen instructions (a channel's
 * ring and wait lists).  A pthread mutex contended by two busy threads
 * sleeps in the kernel (two futex system calls per hand-over), which cost
 * more than the section it guards; this lock spins instead (reading, not
 * writing, the line while it is taken) and yields the CPU after a while,
 * so a holder that lost its CPU gets it back on a crowded machine. */
typedef struct {
    atomic_int taken;
} tps_lock;

#define TPS_LOCK_INIT {0}
#define TPS_LOCK_SPINS 128

static inline void
tps_lock_init(tps_lock *l)
{
    atomic_init(&l->taken, 0);
}

/* How long a timed lock wait lasts at least, whatever the caller's
 * deadline: the lock guards a few dozen instructions, so a call that must
 * not wait (timeout 0) still gets it from a holder that is merely in its
 * section.  Only a holder that lost its CPU for that long keeps it
 * longer.  (A holder that no longer exists, a thread of the parent after
 * fork(), cannot: the fork handlers reset the locks in the child.) */
#define TPS_LOCK_MIN_WAIT_NS 100000000

/* Take the lock, or give up and return -1 once `deadline_ns` (monotonic;
 * < 0: never) has passed and the lock was waited for at least
 * TPS_LOCK_MIN_WAIT_NS.  The clock is read only while the lock is
 * contended, between yields. */
static inline int
tps_lock_acquire_until(tps_lock *l, int64_t deadline_ns)
{
    int64_t give_up = -1;
    for (;;) {
        if (!atomic_exchange_explicit(&l->taken, 1, memory_order_acquire)) {
            return 0;
        }
        int spins = 0;
        while (atomic_load_explicit(&l->taken, memory_order_relaxed)) {
            if (++spins < TPS_LOCK_SPINS) {
                tps_cpu_relax();
                continue;
            }
            spins = 0;
            if (deadline_ns >= 0) {
                int64_t now = tps_now_ns();
                if (give_up < 0) {
                    give_up = now + TPS_LOCK_MIN_WAIT_NS;
                    if (give_up < deadline_ns) {
                        give_up = deadline_ns;
                    }
                }
                else if (now >= give_up) {
                    return -1;
                }
            }
            sched_yield();
        }
    }
}

/* The same with a timeout from now (< 0: wait forever). */
static inline int
tps_lock_acquire_for(tps_lock *l, int64_t timeout_ns)
{
    if (!atomic_exchange_explicit(&l->taken, 1, memory_order_acquire)) {
        return 0;
    }
    return tps_lock_acquire_until(
        l, timeout_ns < 0 ? -1 : tps_now_ns() + timeout_ns);
}

/* Untimed: for sections that must run (unlinking a node from a wait list
 * before its stack frame goes) and callers without a deadline. */
static inline void
tps_lock_acquire(tps_lock *l)
{
    int rc = tps_lock_acquire_until(l, -1);
    assert(rc == 0);
    (void)rc;
}

static inline void
tps_lock_release(tps_lock *l)
{
    atomic_store_explicit(&l->taken, 0, memory_order_release);
}

#endif /* TPSHARE_SPINLOCK_H */
