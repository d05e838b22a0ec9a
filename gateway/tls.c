/*
 * tls: upstream TLS client setup.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <pthread.h>
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

/* SSL ex_data index of a connection's struct tls_session_slot (created once). */
static int slot_index = -1;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;

static void slot_index_init(void)
{
    slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/*
 * Runs on the thread that owns the connection, so the slot needs no lock. The slot keeps a
 * copy: OpenSSL marks a connection's own session non-resumable when the connection is freed
 * without a close_notify exchange (every pooled connection ends that way), which would spoil
 * the slot's session too if it were the same object.
 */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_session_slot *slot = SSL_get_ex_data(ssl, slot_index);
    SSL_SESSION *copy = slot ? SSL_SESSION_dup(sess) : NULL;
    if (!copy)
        return 0;
    if (slot->session)
        SSL_SESSION_free(slot->session);
    slot->session = copy;
    return 0; /* OpenSSL keeps its own reference to SESS */
}

void tls_session_slot_clear(struct tls_session_slot *slot)
{
    if (slot->session)
        SSL_SESSION_free(slot->session);
    slot->session = NULL;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, char *errbuf, size_t errlen)
{
    pthread_once(&slot_once, slot_index_init);
    char reason[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen, "cannot create TLS context: %s", reason);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Resumption keeps new pooled connections cheap: every new session (TLS 1.3 tickets
     * arrive after the handshake) is kept in the slot of the pool whose connection got it, and
     * offered by the pool's next connection. No internal cache: the slots are the cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Read whole records and what follows them in one read(2), not header and body apart;
     * readers check sio_pending for what OpenSSL then holds. */
    SSL_CTX_set_read_ahead(ctx, 1);

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

SSL *tls_client_new(SSL_CTX *ctx, const char *host, struct tls_session_slot *slot)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (slot) {
        SSL_set_ex_data(ssl, slot_index, slot);
        if (slot->session && SSL_SESSION_is_resumable(slot->session))
            SSL_set_session(ssl, slot->session);
    }
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

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *errbuf,
                            size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen, "cannot create TLS context: %s", reason);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen, "cannot load the certificate chain %s: %s", cert_file, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(reason, sizeof(reason));
        snprintf(errbuf, errlen,
                 "cannot load the private key %s (or it does not match the "
                 "certificate): %s",
                 key_file, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

const char *tls_verify_error(const SSL *ssl)
{
    long r = SSL_get_verify_result(ssl);
    if (r == X509_V_OK)
        return NULL;
    return X509_verify_cert_error_string(r);
}
