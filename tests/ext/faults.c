/* faults.c - make chosen libc calls of tpshare fail, for tests.
 *
 * Not a Python module: a library that tests preload (LD_PRELOAD) into a
 * child process to check that tpshare handles the failure of calls that
 * practically never fail.  Each wrapper fails when the environment
 * variable TPSHARE_TEST_FAIL names its function and tpshare's extension
 * is on the call stack (a sanitizer's wrapper may stand in between);
 * otherwise it calls the next definition (libc's).  The variable is read
 * at every call, so a test can switch failures on and off:
 *
 *     TPSHARE_TEST_FAIL="sem_init,pthread_cond_init=12"
 *
 * fails sem_init() with EAGAIN (the default) and pthread_cond_init() with
 * error 12 (ENOMEM).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

/* Set while this thread looks at its stack: the unwinder may initialize
 * locks of its own, which must not fail or recurse. */
static __thread int busy;

/* Whether tpshare's extension is among the callers. */
static int
called_by_tpshare(void)
{
    void *frames[12];
    int n = backtrace(frames, 12);
    for (int i = 1; i < n; i++) {
        Dl_info info;
        if (dladdr(frames[i], &info) != 0 && info.dli_fname != NULL
            && strstr(info.dli_fname, "/tpshare/_tpshare.") != NULL)
        {
            return 1;
        }
    }
    return 0;
}

/* The error the call of `name` is to fail with, or 0 to make it. */
static int
planned_error(const char *name)
{
    const char *spec = getenv("TPSHARE_TEST_FAIL");
    size_t len = strlen(name);
    int err = 0;

    if (busy || spec == NULL) {
        return 0;
    }
    while (spec != NULL && *spec != '\0') {
        if (strncmp(spec, name, len) == 0
            && (spec[len] == '\0' || spec[len] == ',' || spec[len] == '='))
        {
            err = spec[len] == '=' ? atoi(spec + len + 1) : EAGAIN;
            break;
        }
        spec = strchr(spec, ',');
        if (spec != NULL) {
            spec++;
        }
    }
    if (err != 0) {
        busy = 1;
        if (!called_by_tpshare()) {
            err = 0;
        }
        busy = 0;
    }
    return err;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int
sem_init(sem_t *sem, int pshared, unsigned int value)
{
    int err = planned_error("sem_init");
    if (err != 0) {
        errno = err;
        return -1;
    }
    return NEXT(sem_init)(sem, pshared, value);
}

int
pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
    int err = planned_error("pthread_mutex_init");
    return err != 0 ? err : NEXT(pthread_mutex_init)(mutex, attr);
}

int
pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
    int err = planned_error("pthread_cond_init");
    return err != 0 ? err : NEXT(pthread_cond_init)(cond, attr);
}

int
pthread_condattr_init(pthread_condattr_t *attr)
{
    int err = planned_error("pthread_condattr_init");
    return err != 0 ? err : NEXT(pthread_condattr_init)(attr);
}

int
pthread_condattr_setclock(pthread_condattr_t *attr, clockid_t clock)
{
    int err = planned_error("pthread_condattr_setclock");
    return err != 0 ? err : NEXT(pthread_condattr_setclock)(attr, clock);
}

int
pthread_key_create(pthread_key_t *key, void (*destructor)(void *))
{
    int err = planned_error("pthread_key_create");
    return err != 0 ? err : NEXT(pthread_key_create)(key, destructor);
}
