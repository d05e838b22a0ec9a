/*
 * identity: the bot's identity from its bearer token's claims (see identity.h).
 */
#include "identity.h"

#include <jansson.h>
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

void identity_from_authorization(const char *auth, struct identity *out)
{
    out->customer_key[0] = out->subject[0] = '\0';
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || dot2 - dot1 - 1 > MAX_PAYLOAD)
        return;
    unsigned char buf[MAX_PAYLOAD / 4 * 3 + 3];
    size_t len = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, sizeof(buf));
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
