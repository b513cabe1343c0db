/* fork.h - fork() (fork.c): the phases every file with process-wide
 * state handles.
 */
#ifndef TPSHARE_FORK_H
#define TPSHARE_FORK_H

#ifndef TPSHARE_BUILD_CORE
#error "fork.h is internal to tpshare"
#endif

#include "common.h"

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
void tps_workers_atfork(tps_fork_phase phase);    /* workers.c */

#endif /* TPSHARE_FORK_H */
