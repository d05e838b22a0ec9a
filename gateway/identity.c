/*
 * identity: the bot's identity from its bearer token's claims (see identity.h).
 */
#include "identity.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define MAX_PAYLOAD 8192 /* base64 characters of the payload segment read at most */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-' || c == '+')
        return 62;
    if (c == '_' || c == '/')
        return 63;
    return -1;
}

/* Decode base64url (padding optional, stops at the first other character). */
static size_t b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            break;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < cap)
                out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* The payload segment of a bearer token in AUTH (*SEG, *N), or false when AUTH has none that
 * could give an identity. */
static bool payload_segment(const char *auth, const char **seg, size_t *n)
{
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || dot2 - dot1 - 1 > MAX_PAYLOAD)
        return false;
    *seg = dot1 + 1;
    *n = (size_t)(dot2 - dot1 - 1);
    return true;
}

/* The identity the payload segment SEG of N characters gives. */
static void from_payload(const char *seg, size_t n, struct identity *out)
{
    out->customer_key[0] = out->subject[0] = '\0';
    unsigned char buf[MAX_PAYLOAD / 4 * 3 + 3];
    size_t len = b64url_decode(seg, n, buf, sizeof(buf));
    json_t *claims = json_loadb((const char *)buf, len, 0, NULL);
    if (!json_is_object(claims)) {
        json_decref(claims);
        return;
    }
    const char *ck = json_string_value(json_object_get(claims, "auth.anymate.app/CustomerKey"));
    const char *sub = json_string_value(json_object_get(claims, "auth.anymate.app/UserName"));
    if (!sub)
        sub = json_string_value(json_object_get(claims, "sub"));
    /* jansson's strings are valid UTF-8 and may hold \u0000: the text ends there */
    if (ck)
        util_copy_text(out->customer_key, sizeof(out->customer_key), ck);
    if (sub)
        util_copy_text(out->subject, sizeof(out->subject), sub);
    json_decref(claims);
}

void identity_from_authorization(const char *auth, struct identity *out)
{
    identity_cached(NULL, auth, out);
}

/* ---- the cache ---- */

struct identity_cache *identity_cache_new(void)
{
    return calloc(1, sizeof(struct identity_cache));
}

void identity_cache_free(struct identity_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < IDENTITY_CACHE_SLOTS; i++)
        free(c->slot[i].key);
    free(c);
}

/* Picks a slot only (the key is compared in full): 8 bytes at a time, multiply and mix. */
static size_t slot_of(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    for (; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    return (size_t)(h & (IDENTITY_CACHE_SLOTS - 1));
}

void identity_cached(struct identity_cache *c, const char *auth, struct identity *out)
{
    const char *seg;
    size_t n;
    if (!payload_segment(auth, &seg, &n)) {
        out->customer_key[0] = out->subject[0] = '\0';
        return;
    }
    if (!c || n > IDENTITY_CACHE_KEY_MAX) {
        from_payload(seg, n, out);
        return;
    }
    struct identity_cache_slot *sl = &c->slot[slot_of(seg, n)];
    if (sl->key && sl->len == n && memcmp(sl->key, seg, n) == 0) {
        c->hits++;
        *out = sl->id;
        return;
    }
    c->misses++;
    from_payload(seg, n, out);
    /* A miss only (once per bot and token). Memory short: the slot stays as it was. */
    char *key = realloc(sl->key, n ? n : 1);
    if (!key)
        return;
    memcpy(key, seg, n);
    sl->key = key;
    sl->len = n;
    sl->id = *out;
}
