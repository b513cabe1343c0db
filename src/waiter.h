/* waiter.h - parking a thread until something happens.
 *
 * A waiter is a per-thread semaphore that a blocked thread puts on one or
 * more wait lists (a channel's receivers or senders, its interpreter's
 * release waiters) before it parks.  Whoever makes progress possible takes
 * waiters off a list and posts them, under that list's lock (and may
 * then yield its CPU to them, tps_handoff() below).  A woken
 * thread takes itself off every list, under each lock, before it returns,
 * so nothing touches a waiter after its wait ended; an extra post is only
 * a spurious wake-up, and every caller re-checks its condition in a loop.
 *
 * Semaphores rather than condition variables because sem_clockwait()
 * returns EINTR when a signal arrives: a Ctrl-C in the main thread ends
 * the park at once and the caller runs the Python signal handlers, with
 * no timed polling.  Waits use CLOCK_MONOTONIC deadlines.
 *
 * Before parking, a waiter spins for a window that adapts per thread
 * (the spin policy below).  The lock that guards a channel's ring and
 * wait lists is in spinlock.h.
 */
#ifndef TPSHARE_WAITER_H
#define TPSHARE_WAITER_H

#ifndef TPSHARE_BUILD_CORE
#error "waiter.h is internal to tpshare"
#endif

#include "common.h"

#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "spinlock.h"

typedef struct tps_waiter tps_waiter;

/* A node on one wait list; a waiter has one node per list it can be on.
 * `interp`: the ID of the interpreter whose GIL the parked thread takes
 * back once woken, for the waker's hand-over (tps_handoff()); read only
 * by tps_wlist_wake_from() callers that pass `elsewhere`, so lists
 * woken otherwise may leave it at 0. */
typedef struct tps_wnode {
    struct tps_wnode *prev, *next;
    tps_waiter *waiter;
    int64_t interp;
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

/* Wake up to `n` waiters, oldest first (lock held).  Returns how many;
 * *elsewhere (if not NULL) is set to whether one of them runs in an
 * interpreter other than `interp` once woken. */
static inline int
tps_wlist_wake_from(tps_wlist *l, int n, int64_t interp, int *elsewhere)
{
    int woken = 0;
    while (woken < n && l->count > 0) {
        tps_wnode *w = l->head.next;
        tps_wlist_remove(l, w);
        if (elsewhere != NULL && w->interp != interp) {
            *elsewhere = 1;
        }
        sem_post(&w->waiter->sem);
        woken++;
    }
    return woken;
}

static inline int
tps_wlist_wake(tps_wlist *l, int n)
{
    return tps_wlist_wake_from(l, n, 0, NULL);
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

/* Spinning before parking.  Waking a parked thread costs far more than
 * a short spin, so a fixed short spin can lock two busy threads into
 * parking on every round trip; a long one burns CPU on idle waits.  The
 * window adapts per thread: twice the recent waits (an exponential
 * average), between SPIN_MIN_NS and SPIN_MAX_NS.  A channel created with
 * an explicit spin uses that instead.  Spinners yield the CPU every
 * TPS_SPIN_YIELD_NS, so that a thread they wait for that shares their CPU
 * (the kernel tends to wake a parked thread on its waker's CPU) gets to
 * run instead of waiting out their window.  A channel also tells its
 * spinners on which CPU the other side last completed an operation; a
 * spinner on that CPU yields at once.  Yielding with nothing else to run
 * returns at once.  docs/design.md has the measurements behind these
 * numbers. */
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

/* After posting a parked thread, with no lock held: let it run now.
 * The kernel tends to wake a thread on its waker's CPU (always so when
 * the other CPUs are busy), and a woken thread does not preempt its
 * waker there: it waits until the waker blocks or its time slice ends.
 * A sender that goes on after its send (back to Python, then into a
 * sleep that arms a timer, or to its own next recv) keeps its receiver
 * waiting that long; yielding hands the CPU over at once.  With nothing
 * else to run on this CPU (the woken thread went to another CPU) the
 * yield returns at once.  Only for a thread that takes another
 * interpreter's GIL: one that needs the caller's own GIL would run only
 * to block on it.  docs/design-performance.md has the measurements. */
static inline void
tps_handoff(void)
{
    sched_yield();
}

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
