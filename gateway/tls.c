/*
 * tls: upstream TLS client setup.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, char *errbuf, size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen, "cannot create TLS context: %s", reason);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Resumption keeps new pooled connections cheap; tickets are kept per SSL_SESSION. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen, "cannot load trust store %s: %s",
                 ca_file ? ca_file : "(system default)", reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *tls_client_new(SSL_CTX *ctx, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (is_ip_literal(host)) {
        /* RFC 6066: no SNI for IP literals; check the address against iPAddress SANs. */
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
            goto fail;
    } else {
        if (SSL_set_tlsext_host_name(ssl, host) != 1)
            goto fail;
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host) != 1)
            goto fail;
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

const char *tls_verify_error(const SSL *ssl)
{
    long r = SSL_get_verify_result(ssl);
    if (r == X509_V_OK)
        return NULL;
    return X509_verify_cert_error_string(r);
}
