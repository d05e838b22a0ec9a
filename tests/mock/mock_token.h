/*
 * Access tokens of the mock Anymate server: mints JWT-shaped bearer tokens the way the real
 * IdentityServer-style auth host does (3 base64url segments, RS256 header, the claims the SDKs
 * read) and remembers every token issued so that /api/ calls can be checked against them.
 * No I/O; time comes from the caller.
 */
#ifndef ANYMATE_MOCK_TOKEN_H
#define ANYMATE_MOCK_TOKEN_H

#include <stdbool.h>
#include <time.h>

struct mock_tokens;

/* An empty token store, or NULL when out of memory. Free with mock_tokens_free. */
struct mock_tokens *mock_tokens_new(void);
void mock_tokens_free(struct mock_tokens *tokens);

/* Mints a token for (client_id, username) with iat = nbf = now and exp = now + ttl, and
 * records it. Returns a malloc'd string the caller owns (the store keeps its own copy), or NULL
 * when out of memory. */
char *mock_token_issue(struct mock_tokens *tokens, const char *client_id, const char *username,
                       time_t now, long long ttl);

/* True when token was issued by this store and its exp is still in the future. */
bool mock_token_valid(const struct mock_tokens *tokens, const char *token, time_t now);

#endif
