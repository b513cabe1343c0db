/* common.h - what every file of tpshare's core uses: the Python and C
 * headers, the error codes of code under raw locks, lock assertions and
 * the current interpreter's ID.
 */
#ifndef TPSHARE_COMMON_H
#define TPSHARE_COMMON_H

#ifndef TPSHARE_BUILD_CORE
#error "common.h is internal to tpshare"
#endif

#include <Python.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tpshare.h"
#include "compat.h"

/* Error codes of code that runs without the GIL or for another
 * interpreter; converted to exceptions by tps_raise_error(). */
#define TPS_ERR_PYTHON  -1   /* an exception is already set */
#define TPS_ERR_CLOSED  -2
#define TPS_ERR_EMPTY   -3   /* timed out waiting for an item */
#define TPS_ERR_FULL    -4   /* timed out waiting for room */
#define TPS_ERR_NOMEM   -5
#define TPS_ERR_SIGNAL  -6   /* a signal handler raised: exception set */
#define TPS_ERR_EXITING -7   /* the waiter's interpreter is being stopped
                                at exit (tps_interp_stop) */
#define TPS_ERR_FORKED  -8   /* the channel was created before fork() and
                                this is the child */

/* Assert that a pthread mutex is held (where the caller's contract says
 * it holds it: trylock then fails). */
#define TPS_ASSERT_LOCKED(m) assert(pthread_mutex_trylock(m) == EBUSY)

static inline int64_t
tps_current_interp_id(void)
{
    return PyInterpreterState_GetID(PyInterpreterState_Get());
}

#endif /* TPSHARE_COMMON_H */
