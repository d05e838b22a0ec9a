/*
 * connguard: what libevent 2.1's evhttp server does not do for the bots' connections, done in
 * a thin bufferevent filter that evhttp reads through (evhttp_set_bevcb):
 *
 *   - a request head must arrive whole within client_header_timeout of its first byte, else
 *     the bot gets 408 (JSON) and the connection is closed. evhttp has only an inactivity
 *     timeout, which a client trickling one header byte at a time never trips (slowloris);
 *   - at most max_connections connections per worker thread (its share of the configured
 *     total): at the limit the thread stops accepting until one closes.
 *
 * The filter moves bytes unchanged in both directions (no copy for whole buffer chains). It
 * only watches for the end of a request head: an empty line. The request's body and the time
 * the gateway takes to answer are not the head's: the head clock starts again at the first
 * byte after the reply has begun (the output direction tells), 100 Continue excepted.
 */
#ifndef GW_CONNGUARD_H
#define GW_CONNGUARD_H

#include <stdint.h>

struct worker;
struct bufferevent;
struct event_base;

/* The evhttp bevcb: a new filtered bufferevent for one accepted connection. ARG is the
 * worker. */
struct bufferevent *connguard_bevcb(struct event_base *base, void *arg);

#endif
