/* waiter.h - parking a thread until something happens (DESIGN.md D7).
 *
 * A waiter is a per-thread semaphore that a blocked thread puts on one or
 * more wait lists (a channel's receivers or senders, its interpreter's
 * release waiters) before it parks.  Whoever makes progress possible takes
 * waiters off a list and posts them, under that list's lock.  A woken
 * thread takes itself off every list, under each lock, before it returns,
 * so nothing touches a waiter after its wait ended; an extra post is only
 * a spurious wake-up, and every caller re-checks its condition in a loop.
 *
 * Semaphores rather than condition variables because sem_clockwait()
 * returns EINTR when a signal arrives: a Ctrl-C in the main thread ends
 * the park at once and the caller runs the Python signal handlers, with
 * no timed polling.  Waits use CLOCK_MONOTONIC deadlines.
 */
#ifndef TPSHARE_WAITER_H
#define TPSHARE_WAITER_H

#ifndef TPSHARE_BUILD_CORE
#error "waiter.h is internal to tpshare"
#endif

#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

typedef struct tps_waiter tps_waiter;

/* A node on one wait list; a waiter has one node per list it can be on. */
typedef struct tps_wnode {
    struct tps_wnode *prev, *next;
    tps_waiter *waiter;
    int linked;
} tps_wnode;

struct tps_waiter {
    sem_t sem;
    int ready;
};

/* A wait list: a circular doubly linked list with a sentinel.  Guarded by
 * the lock of whatever owns it. */
typedef struct {
    tps_wnode head;
    int count;
} tps_wlist;

static inline void
tps_wlist_init(tps_wlist *l)
{
    l->head.prev = l->head.next = &l->head;
    l->head.waiter = NULL;
    l->head.linked = 0;
    l->count = 0;
}

/* Append `n` (lock held). */
static inline void
tps_wlist_push(tps_wlist *l, tps_wnode *n)
{
    n->prev = l->head.prev;
    n->next = &l->head;
    l->head.prev->next = n;
    l->head.prev = n;
    n->linked = 1;
    l->count++;
}

/* Unlink `n` if it is linked (lock held). */
static inline void
tps_wlist_remove(tps_wlist *l, tps_wnode *n)
{
    if (n->linked) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
        n->linked = 0;
        l->count--;
    }
}

/* Wake up to `n` waiters, oldest first (lock held).  Returns how many. */
static inline int
tps_wlist_wake(tps_wlist *l, int n)
{
    int woken = 0;
    while (woken < n && l->count > 0) {
        tps_wnode *w = l->head.next;
        tps_wlist_remove(l, w);
        sem_post(&w->waiter->sem);
        woken++;
    }
    return woken;
}

static inline int
tps_wlist_wake_all(tps_wlist *l)
{
    return tps_wlist_wake(l, l->count);
}

/* The calling thread's waiter and its set-up (waiter.c): one per thread,
 * whichever file parks it. */
extern TPS_TLS tps_waiter tps_waiter_tls;
tps_waiter *tps_waiter_setup(void);

/* The calling thread's waiter (created on first use; its semaphore lives
 * as long as the thread), or NULL with errno set when its semaphore
 * cannot be made (then tried again next time). */
static inline tps_waiter *
tps_waiter_self(void)
{
    tps_waiter *w = &tps_waiter_tls;
    return w->ready ? w : tps_waiter_setup();
}

/* Monotonic time in nanoseconds. */
static inline int64_t
tps_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spinning before parking.  Waking a parked thread costs 15-100 us on
 * the machines measured, so a fixed short spin can lock two busy threads
 * into parking on every round trip; a long one burns CPU on idle waits.
 * The window adapts per thread: twice the recent waits (an exponential
 * average), between SPIN_MIN_NS and SPIN_MAX_NS.  A channel created with
 * an explicit spin uses that instead.  Spinners yield the CPU every
 * TPS_SPIN_YIELD_NS, so that a thread they wait for that shares their CPU
 * gets to run instead of waiting out their window.  That happens more
 * than on loaded machines: the kernel tends to wake a parked thread on
 * its waker's CPU, and two busy threads can then share one CPU for
 * milliseconds until it moves one.  Each round trip between them then
 * costs two yield intervals: at 20 us that was a cluster of 46 us round
 * trips in 1-3% of a ping-pong; at 2 us, 11 us (both pinned to one CPU).
 * A channel also tells its spinners on which CPU the other side last
 * completed an operation; a spinner on that CPU yields at once (5 us
 * round trips pinned to one CPU).  Yielding with nothing else to run
 * returns at once. */
#define TPS_SPIN_YIELD_NS 2000
#define TPS_SPIN_MIN_NS 50000
#define TPS_SPIN_MAX_NS 250000

/* The calling thread's average wait (waiter.c), for all its waits. */
extern TPS_TLS int64_t tps_recent_wait_ns;

static inline int64_t
tps_spin_window(int64_t configured_ns)
{
    if (configured_ns >= 0) {
        return configured_ns;
    }
    int64_t w = 2 * tps_recent_wait_ns;
    return w < TPS_SPIN_MIN_NS ? TPS_SPIN_MIN_NS
           : w > TPS_SPIN_MAX_NS ? TPS_SPIN_MAX_NS : w;
}

/* Fold the length of a wait that ended (ns) into the average. */
static inline void
tps_spin_learn(int64_t waited_ns)
{
    if (waited_ns > 4 * TPS_SPIN_MAX_NS) {
        waited_ns = 4 * TPS_SPIN_MAX_NS;
    }
    tps_recent_wait_ns += (waited_ns - tps_recent_wait_ns) / 8;
}

#if defined(__x86_64__) || defined(__i386__)
#define tps_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define tps_cpu_relax() __asm__ __volatile__("yield")
#else
#define tps_cpu_relax() ((void)0)
#endif

/* Spin until `ready(arg)` or `until_ns`; returns ready's last answer.
 * `peer_cpu` (or NULL): where the thread that will make `ready` true last
 * ran (sched_getcpu()). */
static inline int
tps_spin(int (*ready)(void *), void *arg, int64_t until_ns,
         const atomic_int *peer_cpu)
{
    int64_t next_yield = tps_now_ns() + TPS_SPIN_YIELD_NS;
    for (int i = 1;; i++) {
        if (ready(arg)) {
            return 1;
        }
        tps_cpu_relax();
        /* The thread we wait for last ran on our CPU: let it run now
         * rather than at the next yield interval. */
        if ((i & 7) == 0 && peer_cpu != NULL
            && atomic_load_explicit(peer_cpu, memory_order_relaxed)
               == sched_getcpu())
        {
            sched_yield();
        }
        if ((i & 63) == 0) {
            int64_t now = tps_now_ns();
            if (now >= until_ns) {
                return 0;
            }
            if (now >= next_yield) {
                sched_yield();
                next_yield = now + TPS_SPIN_YIELD_NS;
            }
        }
    }
}

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

/* How long a thread parked in a channel wait, woken because releases
 * are waiting for its interpreter, leaves them to another thread of the
 * interpreter that may be running (see chancore.c): 200 us, doubled up
 * to 3.2 ms while another thread keeps draining. */
#define TPS_DRAIN_GRACE_NS 200000
#define TPS_DRAIN_GRACE_MAX_NS 3200000

/* Results of tps_waiter_park(). */
#define TPS_PARK_WOKEN 0
#define TPS_PARK_TIMEOUT 1
#define TPS_PARK_SIGNAL 2

/* Park until posted, until `deadline_ns` (monotonic; < 0: no deadline),
 * or until a signal arrives.  Call without the GIL. */
static inline int
tps_waiter_park(tps_waiter *w, int64_t deadline_ns)
{
    int rc;
    if (deadline_ns < 0) {
        rc = sem_wait(&w->sem);
    }
    else {
        struct timespec ts;
        ts.tv_sec = (time_t)(deadline_ns / 1000000000);
        ts.tv_nsec = (long)(deadline_ns % 1000000000);
        rc = sem_clockwait(&w->sem, CLOCK_MONOTONIC, &ts);
    }
    if (rc == 0) {
        return TPS_PARK_WOKEN;
    }
    return errno == ETIMEDOUT ? TPS_PARK_TIMEOUT : TPS_PARK_SIGNAL;
}

/* Consume posts left over from an earlier wait (a post that raced with a
 * timeout), so the next park does not return at once for nothing. */
static inline void
tps_waiter_reset(tps_waiter *w)
{
    while (sem_trywait(&w->sem) == 0) {
    }
}

#endif /* TPSHARE_WAITER_H */
