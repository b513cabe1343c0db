/* ptrmap.h - a pointer-keyed hash table in raw memory.
 *
 * Open addressing with linear probing and tombstones; keys are pointers
 * (never NULL or the two marker values 1 and 2), values are pointers.  It
 * allocates with PyMem_Raw*, so it works without a GIL; it has no lock of
 * its own.  Used by the registry (type -> entry) and by records (identity
 * memos while one message is shared or rebuilt).
 */
#ifndef TPSHARE_PTRMAP_H
#define TPSHARE_PTRMAP_H

#ifndef TPSHARE_BUILD_CORE
#error "ptrmap.h is internal to tpshare"
#endif

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PTRMAP_TOMBSTONE ((void *)1)

typedef struct {
    void *key;
    void *value;
} ptrslot;

typedef struct {
    ptrslot *slots;   /* raw memory, owned */
    size_t mask;      /* capacity - 1 (capacity is a power of two) */
    size_t used;      /* live keys */
    size_t filled;    /* live keys + tombstones */
} ptrmap;

/* Whether slot `s` holds an entry (neither empty nor deleted). */
static inline int
ptrmap_slot_used(const ptrslot *s)
{
    return s->key != NULL && s->key != PTRMAP_TOMBSTONE;
}

static inline size_t
hash_ptr(const void *p)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 33;
    x *= (uintptr_t)0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static inline ptrslot *
ptrmap_probe(const ptrmap *m, const void *key)
{
    if (m->slots == NULL) {
        return NULL;
    }
    for (size_t i = hash_ptr(key) & m->mask;; i = (i + 1) & m->mask) {
        ptrslot *s = &m->slots[i];
        if (s->key == key) {
            return s;
        }
        if (s->key == NULL) {
            return NULL;
        }
    }
}

static inline void *
ptrmap_get(const ptrmap *m, const void *key, int *found)
{
    ptrslot *s = ptrmap_probe(m, key);
    *found = s != NULL;
    return s ? s->value : NULL;
}

static inline int
ptrmap_resize(ptrmap *m, size_t capacity)
{
    ptrslot *old = m->slots;
    size_t oldcap = old ? m->mask + 1 : 0;
    ptrslot *slots = PyMem_RawCalloc(capacity, sizeof(ptrslot));
    if (slots == NULL) {
        return -1;
    }
    m->slots = slots;
    m->mask = capacity - 1;
    m->used = m->filled = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key != NULL && old[i].key != PTRMAP_TOMBSTONE) {
            size_t j = hash_ptr(old[i].key) & m->mask;
            while (slots[j].key != NULL) {
                j = (j + 1) & m->mask;
            }
            slots[j] = old[i];
            m->used++;
            m->filled++;
        }
    }
    PyMem_RawFree(old);
    return 0;
}

/* Insert or overwrite.  Returns 0, or -1 on memory failure (map intact). */
static inline int
ptrmap_set(ptrmap *m, void *key, void *value)
{
    ptrslot *s = ptrmap_probe(m, key);
    if (s != NULL) {
        s->value = value;
        return 0;
    }
    if (m->slots == NULL || (m->filled + 1) * 4 > (m->mask + 1) * 3) {
        size_t cap = m->slots ? m->mask + 1 : 16;
        while (cap * 3 <= (m->used + 1) * 4 * 2) {
            cap *= 2;
        }
        if (ptrmap_resize(m, cap) < 0) {
            return -1;
        }
    }
    size_t i = hash_ptr(key) & m->mask;
    while (m->slots[i].key != NULL && m->slots[i].key != PTRMAP_TOMBSTONE) {
        i = (i + 1) & m->mask;
    }
    if (m->slots[i].key == NULL) {
        m->filled++;
    }
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->used++;
    return 0;
}

/* Delete the entry of slot `s` of `m`: a slot found by a lookup, or the
 * current one of a PTRMAP_FOREACH, which then goes on (a deleted slot
 * becomes a tombstone; no entry moves). */
static inline void
ptrmap_delete_current(ptrmap *m, ptrslot *s)
{
    assert(s >= m->slots && s <= &m->slots[m->mask]);
    assert(ptrmap_slot_used(s));
    s->key = PTRMAP_TOMBSTONE;
    s->value = NULL;
    m->used--;
}

static inline void
ptrmap_del(ptrmap *m, const void *key)
{
    ptrslot *s = ptrmap_probe(m, key);
    if (s != NULL) {
        ptrmap_delete_current(m, s);
    }
}

static inline void
ptrmap_clear(ptrmap *m)
{
    PyMem_RawFree(m->slots);
    memset(m, 0, sizeof(*m));
}

#define PTRMAP_FOREACH(m, s)                                              \
    for (ptrslot *s = (m)->slots; (m)->slots && s <= &(m)->slots[(m)->mask]; \
         s++)                                                             \
        if (ptrmap_slot_used(s))

#endif /* TPSHARE_PTRMAP_H */
