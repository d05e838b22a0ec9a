/*
 * tls: the client-side TLS context for upstream connections. Verification is not optional:
 * chain checked against the configured trust store, host name (or IP address) checked, SNI
 * sent for names, TLS 1.2 or newer.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/ssl.h>

/*
 * New client context trusting CA_FILE (PEM bundle), or the system store when CA_FILE is NULL.
 * Returns NULL with a message in ERRBUF (what failed and OpenSSL's reason). Shared read-only
 * by all worker threads once built.
 */
SSL_CTX *tls_client_ctx_new(const char *ca_file, char *errbuf, size_t errlen);

/*
 * New SSL object for one connection to HOST (a DNS name or an IP literal): SNI for names,
 * X509 host-name or IP check, peer verification on. Returns NULL when out of memory.
 * The caller owns the result (normally handed to a bufferevent with BEV_OPT_CLOSE_ON_FREE).
 */
SSL *tls_client_new(SSL_CTX *ctx, const char *host);

/* A short static description of why verification of SSL's peer failed, or NULL if it did not
 * (e.g. "certificate verify failed: Hostname mismatch"). */
const char *tls_verify_error(const SSL *ssl);

#endif
