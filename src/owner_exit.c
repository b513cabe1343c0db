/* owner_exit.c - an interpreter's exit, on the owner side.
 *
 * CPython runs tps_interp_on_exit() before the interpreter's objects are
 * freed.  It settles what the interpreter left queued (through the exit
 * callbacks: channel items in chanexit.c, tokens in shared.c), then waits
 * (GIL released, warning on stderr) until no other interpreter holds a
 * view of its memory or is reading a record of it taken from a queue,
 * draining releases as they arrive; then it forgets the interpreter's
 * registrations and drops its state.
 */
#include "owner.h"
#include "owner_layout.h"
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

/* Set when the process has begun to exit (tpshare.Interpreter's exit
 * hook, run before the runtime finalizes): from then on exit hooks do not
 * wait for remote holders, as during finalization. */
static atomic_int process_exiting;

void
tps_interp_process_exiting(void)
{
    atomic_store(&process_exiting, 1);
}

/* Seconds an exiting interpreter waits before warning on stderr. */
#define EXIT_WARN_AFTER 2.0

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Owner-bound records of `st` that other interpreters are reading out
 * of queues: counted in `queued` (the token table) or per receiving
 * thread (owner_reading.c). */
static long
being_read(tps_interp *st)
{
    return atomic_load(&st->queued) + tps_reader_sum(st->id);
}

static int
must_wait(tps_interp *st)
{
    return atomic_load(&st->remote) > 0 || being_read(st) > 0
           || atomic_load(&st->unsettled);
}

/* Wait, with the GIL released, until no other interpreter holds records
 * of ours or is reading one taken from a queue, draining releases as they
 * come, and settling again any record put back into a queue meanwhile (a
 * receiver that could not rebuild it).  Warns on stderr while it waits: a
 * hang that names its cause instead of a dangling pointer. */
static void
wait_for_remote_holders(tps_interp *st)
{
    double start = monotonic(), next_warning = start + EXIT_WARN_AFTER;

    assert(tps_thread_state() != NULL);
    assert(atomic_load(&st->exiting));
    tps_interp_drain(st);
    /* Counted in before the first sum (see owner_reading.c). */
    tps_reader_exit_waits(1);
    while (must_wait(st)) {
        int timed_out = 0;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&st->mutex);
        while (must_wait(st) && atomic_load(&st->pending) == 0
               && !atomic_load(&st->rescan))
        {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&st->cond, &st->mutex, &ts)
                == ETIMEDOUT)
            {
                timed_out = 1;
                break;
            }
        }
        pthread_mutex_unlock(&st->mutex);
        Py_END_ALLOW_THREADS
        tps_interp_drain(st);
        /* Queued records are settled again when one was put back, and
         * once a second while some are counted or a settling ran out of
         * memory: records never wait in a queue for an owner that is
         * gone. */
        int resettle = atomic_exchange(&st->rescan, 0);
        if (timed_out) {
            resettle |= atomic_exchange(&st->unsettled, 0);
            resettle |= atomic_load(&st->queued) > 0;
        }
        if (resettle) {
            tps_interp_run_exit_callbacks(st->id);
            tps_interp_drain(st);
        }
        double now = monotonic();
        if (now >= next_warning && must_wait(st)) {
            fprintf(stderr,
                    "tpshare: interpreter %lld is exiting but other "
                    "interpreters still hold %ld view(s) of its memory "
                    "and are reading %ld item(s) it sent; waiting %.0f s "
                    "so far until they are released\n",
                    (long long)st->id, (long)atomic_load(&st->remote),
                    being_read(st), now - start);
            fflush(stderr);
            next_warning = now + 10.0;
        }
    }
    tps_reader_exit_waits(-1);
}

void
tps_interp_on_exit(void *arg)
{
    tps_interp *st = arg;
    int64_t id = st->id;
    int is_main = PyInterpreterState_Get() == PyInterpreterState_Main();

    assert(tps_thread_state() != NULL);
    assert(tps_current_interp_id() == id);
    /* Set before the queues are settled: a record put back into one
     * after that asks for another settling (tps_interp_requeued). */
    pthread_mutex_lock(&st->mutex);
    atomic_store(&st->exiting, 1);
    pthread_mutex_unlock(&st->mutex);

    /* Settle what this interpreter left queued (tokens, channel items)
     * while it is still alive: copies of what can be copied, the
     * channels' unbounditems policy for the rest. */
    tps_interp_run_exit_callbacks(id);

    if (!is_main && !tps_runtime_finalizing()
        && !atomic_load(&process_exiting))
    {
        wait_for_remote_holders(st);
    }
    /* No waiting once the process itself shuts down: the main interpreter
     * exits before the subinterpreters holding its memory are finalized,
     * and subinterpreters are finalized one after the other by a single
     * thread, so a wait could never end.  The exports still held are then
     * never released; the memory they pin stays allocated until the
     * process ends.  See docs/design.md. */
    tps_interp_drain(st);

    pthread_mutex_lock(&st->mutex);
    st->alive = 0;
    pthread_mutex_unlock(&st->mutex);

    tps_interp_unlist(st);
    tps_registry_forget_interp(id);
    Py_CLEAR(st->module);
    tps_interp_decref(st);
}
