/*
 * tls: TLS contexts. Upstream (client): verification is not optional: chain checked against
 * the configured trust store, host name (or IP address) checked, SNI sent for names, TLS 1.2
 * or newer, sessions resumed per pool. Bots (server, optional): certificate and key from the
 * configuration, TLS 1.2 or newer.
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

/* The last TLS session of one upstream pool, offered by its next connection (resumption).
 * Used by one thread only. */
struct tls_session_slot {
    SSL_SESSION *session; /* owned reference, or NULL */
};
void tls_session_slot_clear(struct tls_session_slot *slot);

/*
 * New SSL object for one connection to HOST (a DNS name or an IP literal): SNI for names,
 * X509 host-name or IP check, peer verification on. SLOT (may be NULL): resume its session
 * and keep the sessions this connection receives there (SLOT must outlive the SSL object).
 * Returns NULL when out of memory. The caller owns the result.
 */
SSL *tls_client_new(SSL_CTX *ctx, const char *host, struct tls_session_slot *slot);

/*
 * The server context for TLS towards the bots: CERT_FILE (PEM chain, leaf first) and KEY_FILE,
 * TLS 1.2 or newer, no renegotiation. NULL with a message in ERRBUF naming the file and
 * OpenSSL's reason.
 */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *errbuf,
                            size_t errlen);

/* A short static description of why verification of SSL's peer failed, or NULL if it did not
 * (e.g. "certificate verify failed: Hostname mismatch"). */
const char *tls_verify_error(const SSL *ssl);

#endif
