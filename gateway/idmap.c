/*
 * idmap: the runId/taskId -> processKey cache (see idmap.h).
 */
#include "idmap.h"

#include <stdlib.h>
#include <string.h>

struct idmap_node {
    int64_t id;
    int32_t next;   /* bucket chain, -1 at the end */
    const char *pk; /* interned */
};

#define KEY_SLOTS (2 * IDMAP_MAX_KEYS)

static uint32_t str_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The interned copy of PK, or NULL when the table is full or memory is short. */
static const char *intern(struct idmap *m, const char *pk)
{
    uint32_t i = str_hash(pk) & (KEY_SLOTS - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], pk) == 0)
            return m->keys[i];
        i = (i + 1) & (KEY_SLOTS - 1);
    }
    if (m->nkeys >= IDMAP_MAX_KEYS || !(m->keys[i] = strdup(pk)))
        return NULL;
    m->nkeys++;
    return m->keys[i];
}

int idmap_init(struct idmap *m, uint32_t cap)
{
    memset(m, 0, sizeof(*m));
    if (cap == 0)
        return 0;
    m->cap = cap;
    m->nbuckets = 1;
    while (m->nbuckets < cap)
        m->nbuckets <<= 1;
    m->buckets = malloc(sizeof(int32_t) * m->nbuckets);
    m->nodes = malloc(sizeof(*m->nodes) * cap);
    m->keys = calloc(KEY_SLOTS, sizeof(char *));
    if (!m->buckets || !m->nodes || !m->keys) {
        idmap_clear(m);
        return -1;
    }
    for (uint32_t i = 0; i < m->nbuckets; i++)
        m->buckets[i] = -1;
    return 0;
}

void idmap_clear(struct idmap *m)
{
    if (m->keys)
        for (uint32_t i = 0; i < KEY_SLOTS; i++)
            free(m->keys[i]);
    free(m->keys);
    free(m->nodes);
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

static uint32_t bucket_of(const struct idmap *m, int64_t id)
{
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(x >> 32) & (m->nbuckets - 1);
}

const char *idmap_get(const struct idmap *m, int64_t id)
{
    if (m->cap == 0)
        return NULL;
    for (int32_t i = m->buckets[bucket_of(m, id)]; i >= 0; i = m->nodes[i].next)
        if (m->nodes[i].id == id)
            return m->nodes[i].pk;
    return NULL;
}

void idmap_put(struct idmap *m, int64_t id, const char *pk)
{
    if (m->cap == 0 || strlen(pk) >= IDMAP_KEY_MAX || idmap_get(m, id))
        return;
    const char *key = intern(m, pk);
    if (!key)
        return;
    uint32_t slot = m->ring;
    struct idmap_node *n = &m->nodes[slot];
    if (m->count == m->cap) { /* evict the oldest: unlink it from its bucket */
        int32_t *pp = &m->buckets[bucket_of(m, n->id)];
        while (*pp >= 0 && *pp != (int32_t)slot)
            pp = &m->nodes[*pp].next;
        if (*pp == (int32_t)slot)
            *pp = n->next;
    } else {
        m->count++;
    }
    n->id = id;
    n->pk = key;
    uint32_t b = bucket_of(m, id);
    n->next = m->buckets[b];
    m->buckets[b] = (int32_t)slot;
    m->ring = (slot + 1) % m->cap;
}
