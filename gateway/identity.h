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

#endif
