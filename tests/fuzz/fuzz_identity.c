/*
 * fuzz_identity: libFuzzer target for identity.c (the bot identity from a bearer token).
 * The input is the Authorization header value. Beyond "no crash, no sanitizer report": both
 * texts are NUL-terminated within their buffers, valid UTF-8 and without NUL inside (what the
 * audit tables need), and the same input gives the same identity, through the cache (twice:
 * a miss, then a hit) as well as without it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

static void check_text(const char *t)
{
    size_t n = strnlen(t, IDENTITY_MAX);
    CHECK(n < IDENTITY_MAX);
    CHECK(valid_utf8((const unsigned char *)t, n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *auth = malloc(size + 1);
    if (!auth)
        return 0;
    memcpy(auth, data, size);
    auth[size] = '\0';
    struct identity a, b;
    identity_from_authorization(auth, &a);
    identity_from_authorization(auth, &b);
    check_text(a.customer_key);
    check_text(a.subject);
    CHECK(strcmp(a.customer_key, b.customer_key) == 0 && strcmp(a.subject, b.subject) == 0);
    static struct identity_cache *cache; /* lives across inputs: slots get overwritten */
    if (!cache)
        cache = identity_cache_new();
    for (int i = 0; i < 2; i++) {
        identity_cached(cache, auth, &b);
        CHECK(strcmp(a.customer_key, b.customer_key) == 0 && strcmp(a.subject, b.subject) == 0);
    }
    free(auth);
    return 0;
}
