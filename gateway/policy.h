/*
 * policy: the POLICY phase of the request pipeline (see policy.c for the order of checks and
 * the refusal codes). Configured by [policy], [endpoint "NAME"] and [process "KEY"].
 */
#ifndef GW_POLICY_H
#define GW_POLICY_H

#include <stdbool.h>

/* Register the policy hook. Call once, before the workers start. 0, or -1 on failure. */
int policy_init(void);

/* True when VALUE is "Bearer <token68>" (RFC 6750; scheme case-insensitive). Pure. */
bool policy_bearer_ok(const char *value);

/* True when the Content-Type value CT is application/json with at most a UTF-8 charset
 * parameter (and other parameters, which are ignored). Pure. */
bool policy_media_type_json(const char *ct);

#endif
