/*
 * Small pure helpers for the mock Anymate server (see mock_util.h).
 */
#include "mock_util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

char *mock_base64(const void *data, size_t len, bool url)
{
    if (len > (size_t)INT_MAX / 4 * 3 - 3)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    if (n < 0) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    if (url) {
        while (n > 0 && out[n - 1] == '=')
            out[--n] = '\0';
        for (int i = 0; i < n; i++) {
            if (out[i] == '+')
                out[i] = '-';
            else if (out[i] == '/')
                out[i] = '_';
        }
    }
    return out;
}

bool mock_parse_i64(const char *s, long long min, long long max, long long *out)
{
    if (s == NULL || *s == '\0')
        return false;
    const char *p = s[0] == '-' ? s + 1 : s;
    if (*p == '\0')
        return false;
    for (const char *q = p; *q != '\0'; q++) {
        if (!isdigit((unsigned char)*q))
            return false;
    }
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

json_t *mock_json_get_ci(const json_t *obj, const char *key)
{
    if (!json_is_object(obj))
        return NULL;
    json_t *v = json_object_get(obj, key);
    if (v != NULL)
        return v;
    const char *k;
    json_t *val;
    /* json_object_foreach needs a non-const object; iteration does not modify it. */
    json_object_foreach((json_t *)obj, k, val)
    {
        if (strcasecmp(k, key) == 0)
            return val;
    }
    return NULL;
}

int mock_json_get_int(const json_t *obj, const char *key, long long min, long long max,
                      long long *out)
{
    json_t *v = mock_json_get_ci(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        long long i = json_integer_value(v);
        if (i < min || i > max)
            return -1;
        *out = i;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* NaN fails both comparisons; the range check comes before the cast. */
        if (!(d >= (double)min && d <= (double)max && d > -9e18 && d < 9e18) ||
            d != (double)(long long)d)
            return -1;
        *out = (long long)d;
        return 1;
    }
    if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v))
        return mock_parse_i64(json_string_value(v), min, max, out) ? 1 : -1;
    return -1;
}

/* Reads exactly n digits at *p into *out and advances *p. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

bool mock_parse_iso8601(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int year, mon, day, hour = 0, min = 0, sec = 0, off_h = 0, off_m = 0, sign = 0;
    const char *p = s;

    if (!read_digits(&p, 4, &year) || *p++ != '-' || !read_digits(&p, 2, &mon) || *p++ != '-' ||
        !read_digits(&p, 2, &day))
        return false;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!read_digits(&p, 2, &hour) || *p++ != ':' || !read_digits(&p, 2, &min))
            return false;
        if (*p == ':') {
            p++;
            if (!read_digits(&p, 2, &sec))
                return false;
            if (*p == '.' || *p == ',') {
                p++;
                if (!isdigit((unsigned char)*p))
                    return false;
                while (isdigit((unsigned char)*p))
                    p++;
            }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '-' ? -1 : 1;
            if (!read_digits(&p, 2, &off_h))
                return false;
            if (*p == ':')
                p++;
            if (!read_digits(&p, 2, &off_m))
                return false;
        }
    }
    if (*p != '\0' || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60 || off_h > 23 || off_m > 59)
        return false;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && year != 1969)
        return false;
    *out = t - (time_t)sign * (off_h * 3600 + off_m * 60);
    return true;
}

json_t *mock_json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *c = copy; *c != '\0'; c++) {
        if ((unsigned char)*c >= 0x80)
            *c = '?';
    }
    j = json_string(copy);
    free(copy);
    return j;
}

const char *mock_reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "Mock Status" : "Mock Error";
    }
}

json_t *mock_response(bool ok, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *res = json_object();
    json_object_set_new(res, "succeeded", json_boolean(ok));
    json_object_set_new(res, "message", mock_json_text(msg));
    return res;
}
