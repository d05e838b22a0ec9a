/*
 * identity: who a bot is, from its bearer token, for the audit records (design.md §5).
 *
 * The JWT's payload segment is base64url-decoded and its claims read: the customer from
 * "auth.anymate.app/CustomerKey", the Mate (bot user) from "auth.anymate.app/UserName", else
 * "sub". The token is neither verified (Anymate does that) nor kept: only these two texts
 * leave this module, cut at a UTF-8 character boundary to fit. Anything unreadable (no
 * bearer, not three segments, bad base64, not a JSON object, claims not strings) gives empty
 * texts, never an error: the record then says "unknown" rather than refusing the request.
 *
 * Pure: no I/O, no global state; safe from any thread; fuzzed (tests/fuzz/fuzz_identity.c).
 *
 * The cache. Decoding the claims (base64 and a JSON parse) is a measurable share of an audited
 * request's CPU, and a bot sends the same token with every request until it renews it. Each
 * worker thread therefore keeps a small direct-mapped cache from the token's *payload segment*
 * (the claims, not the signature: the cache holds no credential Anymate would accept) to the
 * identity it gives. The identity is a function of those bytes alone, so a hit is exact: the
 * key is compared in full, the hash only picks the slot. A slot is overwritten by the next
 * payload hashing to it; payloads longer than IDENTITY_CACHE_KEY_MAX are decoded every time.
 * Not thread-safe: one cache per thread.
 */
#ifndef GW_IDENTITY_H
#define GW_IDENTITY_H

#include <stddef.h>

#define IDENTITY_MAX 256 /* bytes of each text with its NUL */

struct identity {
    char customer_key[IDENTITY_MAX]; /* "" when unknown */
    char subject[IDENTITY_MAX];      /* "" when unknown */
};

/* Read the identity from an Authorization header value AUTH (NUL-terminated; NULL allowed). */
void identity_from_authorization(const char *auth, struct identity *out);

#define IDENTITY_CACHE_SLOTS 256    /* a power of two */
#define IDENTITY_CACHE_KEY_MAX 4096 /* bytes of a payload segment that may be cached */

struct identity_cache_slot {
    char *key; /* the payload segment (malloc'ed), NULL when the slot is empty */
    size_t len;
    struct identity id;
};

struct identity_cache {
    struct identity_cache_slot slot[IDENTITY_CACHE_SLOTS];
    unsigned long long hits, misses;
};

/* An empty cache, or NULL when memory is short. */
struct identity_cache *identity_cache_new(void);
void identity_cache_free(struct identity_cache *c); /* NULL allowed */

/* As identity_from_authorization, through cache C (NULL: decode every time). */
void identity_cached(struct identity_cache *c, const char *auth, struct identity *out);

#endif
