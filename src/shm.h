/* shm.h - tpshare.shm: channels between processes in one shared segment.
 *
 * A segment is a memfd mapped MAP_SHARED by every process that holds a
 * handle (docs/shm.md says why a memfd).  Nothing in it is a pointer:
 * the ring's slots and the block table name memory by offsets from the
 * heap's start, so each process maps it where it likes.
 *
 * Layout, in this order, each part 64-byte aligned:
 *   tps_shm_header   magic, version, token, the layout (written once by
 *                    the creator, read and checked once by each opener
 *                    and then used from the opener's own copy), then the
 *                    robust process-shared mutex and what it guards;
 *   slots            the ring: nslots tps_shm_slot, head and tail count
 *                    up forever (slot = count % nslots);
 *   blocks           the block table: who holds each allocation;
 *   bitmap           one bit per TPS_SHM_GRANULE bytes of heap;
 *   heap             the payloads.
 *
 * Files: shm_seg.c (layout, lock, allocator, ring) and shm_repair.c
 * (dead processes, repair): no Python objects, negative TPS_SHM_E*
 * codes; shm_handle.c (the handle type: mapping, errors, lock with the
 * GIL released, its small methods), shm_chan.c (send and receive),
 * shm_objs.c (buffers, views, trackers, the module).
 *
 * Trust: another process can write anything anywhere in the segment.
 * Every value read from it is checked before it is used as an index,
 * offset or length, and used from a local copy after the check.
 */
#ifndef TPSHARE_SHM_H
#define TPSHARE_SHM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TPS_SHM_MAGIC 0x314d485345525054ULL   /* "TPRESHM1" */
#define TPS_SHM_VERSION 2u
#define TPS_SHM_GRANULE 256u
#define TPS_SHM_INLINE 96u
#define TPS_SHM_TOKEN 16

/* Error codes of shm_seg.c (never Python exceptions). */
#define TPS_SHM_OK 0
#define TPS_SHM_ETIMEOUT (-1)   /* the deadline passed */
#define TPS_SHM_ECORRUPT (-2)   /* the segment breaks its invariants */
#define TPS_SHM_ENOSPACE (-3)   /* no room in the heap or block table */
#define TPS_SHM_EFULL (-4)      /* the ring is full (or at maxsize) */
#define TPS_SHM_EEMPTY (-5)
#define TPS_SHM_ECLOSED (-6)
#define TPS_SHM_EINTR (-7)      /* a signal arrived during a wait */
#define TPS_SHM_ESYS (-8)       /* a system call failed: see errno */

/* Slot kinds. */
#define TPS_SHM_SLOT_INLINE 1u  /* the payload is in the slot */
#define TPS_SHM_SLOT_BLOCK 2u   /* the payload is a block of the heap */

/* Slot and block flags. */
#define TPS_SHM_WRITABLE 1u

/* Block states (the pid says whose, for OWNED and HELD). */
#define TPS_SHM_FREE 0u
#define TPS_SHM_OWNED 1u   /* allocated by pid, not queued yet */
#define TPS_SHM_QUEUED 2u  /* referred to by a slot of the ring */
#define TPS_SHM_HELD 3u    /* received: pid's views hold it */
#define TPS_SHM_CACHED 4u  /* freed, its span kept (still set in the
                              bitmap) for the next block of the same
                              size: a large block is handed out again
                              without touching the bitmap */

/* Freed blocks of at least this many granules go to the header's cache
 * (below them the bitmap's words cost less than the cache's scan). */
#define TPS_SHM_CACHE_MIN 64u
#define TPS_SHM_NCACHE 64

typedef struct {
    uint32_t kind;
    uint32_t flags;
    uint64_t len;
    uint32_t block;
    uint32_t gen;
    int32_t pid;        /* the sender */
    uint32_t tag;       /* what the payload is (shm.Channel: a value) */
    uint8_t data[TPS_SHM_INLINE];
} tps_shm_slot;

typedef struct {
    uint32_t state;
    int32_t pid;
    uint32_t gen;       /* bumped at each free: trackers compare it */
    uint32_t flags;
    uint64_t off;       /* from the heap's start */
    uint64_t len;       /* bytes asked for */
    uint64_t start;     /* pid's start time: a reused pid is not pid */
} tps_shm_block;

typedef struct {
    /* Written once by the creator. */
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint8_t token[TPS_SHM_TOKEN];
    uint64_t total_size;
    uint64_t slots_off;
    uint64_t blocks_off;
    uint64_t bitmap_off;
    uint64_t heap_off;
    uint64_t ngranules;
    uint32_t nslots;
    uint32_t nblocks;
    uint32_t maxsize;   /* 0: the ring's size */
    uint32_t kind;      /* which Python class made it */
    /* Guarded by lock. */
    _Alignas(64) pthread_mutex_t lock;
    uint64_t head;
    uint64_t tail;
    uint32_t closed;
    uint32_t alloc_hint;
    uint64_t used_granules;
    uint64_t sent, received, dropped, reclaimed;
    uint64_t repairs;   /* tables rebuilt: a dead lock holder, or
                           a corrupt ring */
    int64_t last_sweep; /* CLOCK_MONOTONIC ns of the last reclaim sweep
                           made because the heap was full */
    /* Indices of CACHED blocks; an entry is in use only while the
     * block it names is CACHED (checked at each use). */
    uint32_t cache[TPS_SHM_NCACHE];
    /* Atomics: futex words and counters read without the lock. */
    _Alignas(64) uint32_t items_seq;    /* bumped when an item is queued */
    uint32_t space_seq;                 /* bumped when room appears */
    uint32_t release_seq;               /* bumped when a block is freed */
    uint32_t recv_waiters;
    uint32_t send_waiters;
    uint32_t release_waiters;
    uint64_t sends_parked;
    uint64_t recvs_parked;
} tps_shm_header;

/* One process's view of a segment: the layout as checked at attach,
 * never re-read from the segment. */
typedef struct {
    char *base;
    size_t size;
    tps_shm_header *hdr;
    tps_shm_slot *slots;
    tps_shm_block *blocks;
    uint64_t *bitmap;
    char *heap;
    uint64_t heap_size;
    uint64_t ngranules;
    uint32_t nslots;
    uint32_t nblocks;
    uint32_t maxsize;
    uint32_t kind;
} tps_shm_map;

/* Layout and attach (shm_seg.c). */
int tps_shm_layout_size(uint64_t size, uint32_t maxsize, uint64_t *total);
int tps_shm_init(tps_shm_map *m, char *base, size_t size, uint64_t payload,
                 uint32_t maxsize, uint32_t kind, const uint8_t *token);
int tps_shm_attach(tps_shm_map *m, char *base, size_t size,
                   const uint8_t *token);

/* The lock: deadline is CLOCK_MONOTONIC in ns, or -1 for none.  A dead
 * holder is repaired before the lock is returned. */
int tps_shm_lock(tps_shm_map *m, int64_t deadline);
void tps_shm_unlock(tps_shm_map *m);
int tps_shm_repair(tps_shm_map *m);
int tps_shm_reclaim(tps_shm_map *m);
int tps_shm_pid_dead(int32_t pid, uint64_t start);
uint64_t tps_shm_granules(uint64_t len);
void tps_shm_bits_set(uint64_t *bm, uint64_t from, uint64_t n, int on);
uint64_t tps_shm_own_start(void);

/* Under the lock. */
int tps_shm_alloc(tps_shm_map *m, uint64_t len, uint32_t flags,
                  uint32_t *idx);
void tps_shm_free_block(tps_shm_map *m, uint32_t idx);
void tps_shm_cache_flush(tps_shm_map *m);
int tps_shm_block_check(tps_shm_map *m, uint32_t idx, uint32_t state,
                        uint64_t *off, uint64_t *len);
uint64_t tps_shm_queued(tps_shm_map *m);
int tps_shm_room(tps_shm_map *m, uint64_t n);
int tps_shm_push(tps_shm_map *m, const tps_shm_slot *s);
int tps_shm_pop(tps_shm_map *m, tps_shm_slot *out);

/* Waiting and waking: futex words of the header. */
int64_t tps_shm_now(void);
int tps_shm_wait(uint32_t *word, uint32_t seen, int64_t deadline);
void tps_shm_wake(uint32_t *word, uint32_t *waiters);

#endif /* TPSHARE_SHM_H */
