/* waiter.c - the per-thread state of waits (waiter.h).
 *
 * Defined here once, not in the header: a `static` thread-local in a
 * header is a separate variable in every file that includes it, so a
 * thread had one semaphore per file that parks and a spin window that
 * only the file that learned it saw.
 */
#include "waiter.h"

TPS_TLS tps_waiter tps_waiter_tls;
TPS_TLS int64_t tps_recent_wait_ns = TPS_SPIN_MIN_NS;

tps_waiter *
tps_waiter_setup(void)
{
    tps_waiter *w = &tps_waiter_tls;
    assert(!w->ready);
    if (sem_init(&w->sem, 0, 0) != 0) {
        return NULL;
    }
    w->ready = 1;
    return w;
}
