/*
 * Small pure helpers shared by the mock Anymate server: base64, strict integer parsing,
 * case-insensitive JSON key lookup, ISO-8601 dates and HTTP reason phrases. Nothing here does
 * I/O, logs or exits.
 */
#ifndef ANYMATE_MOCK_UTIL_H
#define ANYMATE_MOCK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

/* Base64 of len bytes; url selects the unpadded base64url alphabet (JWT segments).
 * Returns a malloc'd NUL-terminated string owned by the caller, or NULL when out of memory. */
char *mock_base64(const void *data, size_t len, bool url);

/* Parses a whole decimal integer ("-12", no spaces, no '+') within [min, max]. */
bool mock_parse_i64(const char *s, long long min, long long max, long long *out);

/* Borrowed value of key in obj: an exact match first, else the first key equal ignoring ASCII
 * case (the real server binds request keys case-insensitively). NULL when obj is not an object
 * or has no such key. */
json_t *mock_json_get_ci(const json_t *obj, const char *key);

/* Reads an optional integer field (matched like mock_json_get_ci). Accepts a JSON integer, an
 * integral real or a numeric string within [min, max]. Returns 1 and sets *out when present,
 * 0 when absent or null, -1 when present with another type or out of range. */
int mock_json_get_int(const json_t *obj, const char *key, long long min, long long max,
                      long long *out);

/* Parses "YYYY-MM-DD" or "YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|+HH:MM|-HH:MM|+HHMM]" into epoch
 * seconds; no offset means UTC. Returns false for anything else. */
bool mock_parse_iso8601(const char *s, time_t *out);

/* A new JSON string for s. Text that is not valid UTF-8 (it may come straight from the wire)
 * has each non-ASCII byte replaced by '?'. NULL only when out of memory. */
json_t *mock_json_text(const char *s);

/* Reason phrase for an HTTP status; a generic one for codes it does not know. Static string. */
const char *mock_reason_phrase(int status);

/* {"succeeded": ok, "message": <printf text>}: Anymate's AnymateResponse. New reference. */
json_t *mock_response(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
