/*
 * Access tokens of the mock Anymate server (see mock_token.h).
 *
 * The store is a jansson object used as a hash map: token text -> integer exp. Expired entries
 * are swept once the map grows past SWEEP_AT, so a long test run cannot grow it without bound.
 */
#include "mock_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "mock_util.h"

#define SWEEP_AT 4096

struct mock_tokens {
    json_t *issued;         /* owned: object, token -> exp (integer) */
    unsigned long long seq; /* makes signatures unique even if RAND_bytes fails */
};

struct mock_tokens *mock_tokens_new(void)
{
    struct mock_tokens *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->issued = json_object();
    if (t->issued == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void mock_tokens_free(struct mock_tokens *tokens)
{
    if (tokens == NULL)
        return;
    json_decref(tokens->issued);
    free(tokens);
}

static void sweep_expired(struct mock_tokens *tokens, time_t now)
{
    const char *key;
    json_t *exp;
    void *tmp;
    json_object_foreach_safe(tokens->issued, tmp, key, exp)
    {
        if (json_integer_value(exp) <= (json_int_t)now)
            json_object_del(tokens->issued, key);
    }
}

/* base64url of the compact JSON text of obj; caller frees. NULL on failure. */
static char *segment(const json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (text == NULL)
        return NULL;
    char *seg = mock_base64(text, strlen(text), true);
    free(text);
    return seg;
}

char *mock_token_issue(struct mock_tokens *tokens, const char *client_id, const char *username,
                       time_t now, long long ttl)
{
    if (json_object_size(tokens->issued) >= SWEEP_AT)
        sweep_expired(tokens, now);

    long long exp = (long long)now + ttl;
    json_t *header = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    json_t *payload = json_object();
    if (payload != NULL) {
        json_object_set_new(payload, "exp", json_integer(exp));
        json_object_set_new(payload, "iat", json_integer(now));
        json_object_set_new(payload, "nbf", json_integer(now));
        json_object_set_new(payload, "sub", mock_json_text(username));
        json_object_set_new(payload, "aud", json_pack("[s]", "apimate"));
        json_object_set_new(payload, "auth.anymate.app/CustomerKey", mock_json_text(client_id));
        json_object_set_new(payload, "auth.anymate.app/UserType", json_string("Mate"));
        json_object_set_new(payload, "auth.anymate.app/UserName", mock_json_text(username));
    }

    /* The signature is never verified by any SDK: random bytes make each token unique. */
    unsigned char sig[32];
    if (RAND_bytes(sig, sizeof(sig)) != 1)
        memset(sig, 0x5a, sizeof(sig));
    tokens->seq++;
    for (size_t i = 0; i < sizeof(tokens->seq); i++)
        sig[i] ^= (unsigned char)(tokens->seq >> (8 * i));

    char *h = header != NULL ? segment(header) : NULL;
    char *p = payload != NULL ? segment(payload) : NULL;
    char *s = mock_base64(sig, sizeof(sig), true);
    char *token = NULL;
    if (h != NULL && p != NULL && s != NULL) {
        size_t len = strlen(h) + strlen(p) + strlen(s) + 3;
        token = malloc(len);
        if (token != NULL) {
            snprintf(token, len, "%s.%s.%s", h, p, s);
            if (json_object_set_new(tokens->issued, token, json_integer(exp)) != 0) {
                free(token);
                token = NULL;
            }
        }
    }
    free(s);
    free(p);
    free(h);
    json_decref(payload);
    json_decref(header);
    return token;
}

bool mock_token_valid(const struct mock_tokens *tokens, const char *token, time_t now)
{
    json_t *exp = json_object_get(tokens->issued, token);
    return exp != NULL && json_integer_value(exp) > (json_int_t)now;
}
