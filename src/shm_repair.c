/* shm_repair.c - tpshare.shm after a process died: whether a holder is
 * alive, freeing what dead processes held, and rebuilding the tables
 * after a holder of the lock died inside a critical section (or a slot
 * turned out corrupt).
 *
 * No Python objects; "under the lock" as in shm_seg.c.  The segment is
 * untrusted: the repair checks each block as the allocator does.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read /proc/<pid>/stat: *zombie and the start time (clock ticks after
 * boot, field 22).  Returns 0, or -1 when the process is gone. */
static int
read_stat(int32_t pid, int *zombie, uint64_t *start)
{
    char path[64], buf[512];
    FILE *f;
    char *p;
    int field = 3, rc = -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT || errno == ESRCH ? -1 : 0;
    }
    *zombie = 0;
    *start = 0;
    if (fgets(buf, sizeof(buf), f) != NULL) {
        /* The command name may hold spaces and parentheses: the fields
         * start after the last ')'. */
        p = strrchr(buf, ')');
        if (p != NULL && p[1] == ' ') {
            p += 2;
            *zombie = (*p == 'Z' || *p == 'X');
            while (*p && field < 22) {
                if (*p++ == ' ') {
                    field++;
                }
            }
            if (field == 22) {
                *start = strtoull(p, NULL, 10);
            }
        }
        rc = 0;
    }
    fclose(f);
    return rc;
}

/* This process's start time, read once per process (after fork(), the
 * child reads its own). */
uint64_t
tps_shm_own_start(void)
{
    static int32_t cached_pid;
    static uint64_t cached_start;
    int32_t me = (int32_t)getpid();
    int zombie;
    uint64_t start;
    if (__atomic_load_n(&cached_pid, __ATOMIC_ACQUIRE) == me) {
        return __atomic_load_n(&cached_start, __ATOMIC_RELAXED);
    }
    if (read_stat(me, &zombie, &start) < 0) {
        start = 0;
    }
    __atomic_store_n(&cached_start, start, __ATOMIC_RELAXED);
    __atomic_store_n(&cached_pid, me, __ATOMIC_RELEASE);
    return start;
}

/* Whether the process pid that started at `start` (0: unknown) is gone:
 * no such pid, a zombie, or another process under the same pid. */
int
tps_shm_pid_dead(int32_t pid, uint64_t start)
{
    int zombie = 0;
    uint64_t now_start = 0;
    if (pid <= 0) {
        return 1;
    }
    if (kill(pid, 0) == -1 && errno == ESRCH) {
        return 1;
    }
    if (read_stat(pid, &zombie, &now_start) < 0) {
        return 1;
    }
    return zombie || (start != 0 && now_start != 0 && start != now_start);
}

/* Under the lock: free the blocks of dead processes (sent or received,
 * not queued: a queued item stays deliverable).  Gives how many. */
int
tps_shm_reclaim(tps_shm_map *m)
{
    /* Asking the kernel costs a few system calls: remember the last
     * few answers for this sweep. */
    int32_t seen_pid[8] = {0};
    uint64_t seen_start[8] = {0};
    int seen_dead[8] = {0};
    int n = 0, next = 0;
    int32_t me = (int32_t)getpid();
    uint64_t my_start = tps_shm_own_start();
    for (uint32_t i = 0; i < m->nblocks; i++) {
        uint32_t st = m->blocks[i].state;
        int32_t pid = m->blocks[i].pid;
        uint64_t start = m->blocks[i].start;
        int dead = -1;
        if ((st != TPS_SHM_OWNED && st != TPS_SHM_HELD)
                || (pid == me && (start == my_start || start == 0))) {
            continue;
        }
        for (int k = 0; k < 8; k++) {
            if (seen_pid[k] == pid && seen_start[k] == start && pid != 0) {
                dead = seen_dead[k];
            }
        }
        if (dead < 0) {
            dead = tps_shm_pid_dead(pid, start);
            seen_pid[next] = pid;
            seen_start[next] = start;
            seen_dead[next] = dead;
            next = (next + 1) % 8;
        }
        if (dead) {
            tps_shm_free_block(m, i);
            n++;
        }
    }
    if (n) {
        m->hdr->reclaimed += (uint64_t)n;
        tps_shm_wake(&m->hdr->release_seq, &m->hdr->release_waiters);
        tps_shm_wake(&m->hdr->space_seq, &m->hdr->send_waiters);
    }
    return n;
}

/* Under the lock, after a holder died in a critical section (or when
 * asked): free what dead processes held, drop queued blocks no slot
 * refers to (a push cut short), rebuild the bitmap from the blocks. */
int
tps_shm_repair(tps_shm_map *m)
{
    tps_shm_header *h = m->hdr;
    uint8_t *referred = NULL;
    uint64_t queued, off, len, used = 0;
    int rc = TPS_SHM_OK;

    h->repairs++;
    tps_shm_reclaim(m);
    queued = h->tail - h->head;
    if (queued > m->nslots) {
        /* The counters are not ours to trust: drop the queue. */
        __atomic_store_n(&h->head, h->tail, __ATOMIC_RELEASE);
        queued = 0;
        rc = TPS_SHM_ECORRUPT;
    }
    referred = calloc(m->nblocks, 1);
    if (referred == NULL) {
        return TPS_SHM_ESYS;
    }
    for (uint64_t i = 0; i < queued; i++) {
        const tps_shm_slot *s = &m->slots[(h->head + i) % m->nslots];
        uint32_t b = s->block;
        if (s->kind == TPS_SHM_SLOT_BLOCK && b < m->nblocks) {
            referred[b] = 1;
        }
    }
    memset(m->bitmap, 0, (m->ngranules + 63) / 64 * 8);
    for (uint32_t i = 0; i < m->nblocks; i++) {
        uint32_t st = m->blocks[i].state;
        if (st == TPS_SHM_CACHED) {
            /* The bitmap is rebuilt without the cache's spans. */
            m->blocks[i].state = TPS_SHM_FREE;
        }
        if (st == TPS_SHM_FREE || st == TPS_SHM_CACHED) {
            continue;
        }
        if ((st == TPS_SHM_QUEUED && !referred[i])
                || tps_shm_block_check(m, i, TPS_SHM_FREE, &off, &len) < 0) {
            __atomic_fetch_add(&m->blocks[i].gen, 1, __ATOMIC_SEQ_CST);
            m->blocks[i].state = TPS_SHM_FREE;
            h->dropped++;
            continue;
        }
        tps_shm_bits_set(m->bitmap, off / TPS_SHM_GRANULE, tps_shm_granules(len), 1);
        used += tps_shm_granules(len);
    }
    h->used_granules = used;
    free(referred);
    __atomic_fetch_add(&h->release_seq, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&h->space_seq, 1, __ATOMIC_SEQ_CST);
    return rc;
}
