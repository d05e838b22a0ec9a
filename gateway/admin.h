/*
 * admin: the operator's listener on its own address (never the bots' port): GET /livez (the
 * process runs its loops) and GET /readyz (it can serve: every worker running and not
 * draining, both upstream host names resolved). Runs on the main thread's loop and only reads
 * the workers' published atomics.
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct worker;
struct admin;
struct spool;

/* Serve on the listening socket FD (taken over). WORKERS and SPOOL (NULL: none) are borrowed
 * for the admin's life. Returns NULL with a message in ERRBUF. */
struct admin *admin_new(struct event_base *base, int fd, struct worker **workers, int nworkers,
                        struct spool *spool, char *errbuf, size_t errlen);
void admin_set_draining(struct admin *a);
/* A SIGHUP reload succeeded or was refused (counted on /metrics). Main thread. */
void admin_note_reload(struct admin *a, bool ok);
void admin_free(struct admin *a);

#endif
