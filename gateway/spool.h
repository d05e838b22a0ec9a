/*
 * spool: the ledger's durable local spool (design.md §5). When PostgreSQL cannot commit a
 * record in time (down, restarting, frozen, slower than commit_timeout), the record is appended
 * here and made durable with fdatasync before its request goes on; the replay (replay.c) puts
 * it into PostgreSQL later. Nothing is lost but with the disk itself.
 *
 * Files. [audit] spool_dir holds append-only segment files, one open segment per worker
 * thread at a time:
 *
 *   seg-<seq 16 hex>-w<worker>.open   being appended to by the writer thread
 *   seg-<seq 16 hex>-w<worker>.seg    closed (full, idle for a second, or at shutdown):
 *                                     replayable, deleted once every record is committed
 *   cut/...                           bytes cut out of damaged segments at start-up, kept
 *   refused.seg                       records PostgreSQL refused at replay (not retried)
 *
 * seq orders segments across workers and restarts; a worker's records are in the order the
 * worker appended them, so a request's outcome is never replayed before its record.
 *
 * Segment format (all integers little-endian):
 *   header  "AMGWSPL\n" (8) | version u32 = 1 | worker u32 | seq u64 | created wall ms u64
 *   frame   marker u32 0x4652474C ("LGRF") | length u32 | crc32c u32 | version u8 = 1 |
 *           payload (length bytes: a ledger_encode'd record)
 * The CRC32C covers the version byte and the payload. A frame is valid when its marker,
 * length (1..LEDGER_MAX_BYTES + 64, inside the file) and CRC hold and the payload decodes.
 *
 * Start-up. Every segment left by an earlier process is scanned (spool_scan). A torn tail (a
 * frame cut short by a crash, or garbage after the last valid frame) is truncated; damaged
 * bytes between valid frames (a bad checksum or marker) are cut out and the segment rewritten.
 * Each cut is logged with the file, offset, length and reason, and its bytes are kept under
 * cut/. Left-over .open segments are closed.
 *
 * Group commit. Workers hand frames to one writer thread (never a worker loop) through a
 * per-worker buffer; the writer writes everything pending with one write per segment, then one
 * fdatasync per segment, and only then reports the appends durable. Many requests share one
 * sync. The worker learns of it through an eventfd on its loop: a completion never runs inside
 * spool_append.
 *
 * Space. spool_max_bytes bounds the files (closed and open) plus what is pending. An audit
 * record that gates a request (SPOOL_GATE) is refused once the spool is within 1/16 of full,
 * and it reserves room for its outcome; its outcome (SPOOL_OUTCOME) uses that reservation;
 * maps and refusal summaries (SPOOL_OTHER) may use the rest. So a record admitted to the spool
 * always finds room for its outcome.
 */
#ifndef GW_SPOOL_H
#define GW_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct ledger_rec;
struct spool;
struct spool_worker;

#define SPOOL_FRAME_HEADER 13 /* marker, length, crc, version */
#define SPOOL_FILE_HEADER 32
#define SPOOL_OUTCOME_RESERVE 2048

struct spool_options {
    const char *dir;
    uint64_t max_bytes;
    uint64_t segment_bytes; /* a segment is closed once this large */
    uint32_t idle_close_ms; /* ... or when no append came for this long */
    int nworkers;
};

struct spool_stats {
    uint64_t bytes;          /* on disk and pending */
    uint64_t records;        /* on disk, not yet replayed */
    uint64_t segments;       /* files on disk */
    uint64_t oldest_wall_ms; /* creation of the oldest segment on disk; 0 when empty */
    uint64_t appended;       /* records appended since start */
    uint64_t syncs;          /* fdatasync calls (appended / syncs = records per sync) */
    uint64_t replayed;       /* records replayed into PostgreSQL since start */
    uint64_t refused_full;   /* appends refused: spool full */
    uint64_t write_errors;   /* appends failed: write or sync error */
    uint64_t replay_refused; /* records PostgreSQL refused at replay (kept in refused.seg) */
    uint64_t cut_bytes;      /* bytes cut from damaged segments at start-up */
};

/* Open (create) the spool in OPTS->dir: repair what an earlier process left (see above), start
 * the writer thread. NULL with a message in ERR on failure. */
struct spool *spool_open(const struct spool_options *opts, char *err, size_t errlen);

/* Stop the writer after it has written and synced everything pending, close open segments.
 * Workers' handles must be freed first. */
void spool_close(struct spool *s);

void spool_get_stats(struct spool *s, struct spool_stats *out);

/* ---- worker side (each handle used by its worker thread only) ---- */

/* OK true: durable. False: the write or sync failed (ERROR says why); not durable. */
typedef void (*spool_done_fn)(void *arg, bool ok, const char *error);

enum spool_class { SPOOL_GATE, SPOOL_OUTCOME, SPOOL_OTHER };

/* The handle of worker INDEX, whose completions arrive on BASE. NULL when out of resources. */
struct spool_worker *spool_worker_new(struct spool *s, int index, struct event_base *base);

/* Wait for the writer to finish this worker's pending appends, run their callbacks, free. Call
 * after the worker's loop has stopped. */
void spool_worker_free(struct spool_worker *w);

/*
 * Append R. Returns 0 when queued (DONE runs later on the worker's loop, never inside this
 * call), -1 when refused at once (spool full for this class, or out of memory): no callback.
 */
int spool_append(struct spool_worker *w, const struct ledger_rec *r, enum spool_class cls,
                 spool_done_fn done, void *arg);

/* Appends not yet durable. */
size_t spool_worker_pending(const struct spool_worker *w);

/* Would a SPOOL_GATE record of about BYTES be admitted now? */
bool spool_has_room(struct spool *s, size_t bytes);

/* ---- replay side ---- */

struct spool_segment {
    uint64_t seq;
    char path[1024];
    uint64_t bytes;
};

/* Closed segments, oldest first, at most MAX into OUT. Returns how many. */
size_t spool_closed_segments(struct spool *s, struct spool_segment *out, size_t max);

/* Ask the writer to close every open segment now (the replay wants them). */
void spool_close_open_segments(struct spool *s);

/* Block until a segment is closed or MS milliseconds pass (or the spool is closing). */
void spool_wait_closed(struct spool *s, uint32_t ms);

/* The records of segment SEG were replayed (RECORDS of them): delete it. 0, or -1. */
int spool_segment_done(struct spool *s, const struct spool_segment *seg, uint64_t records);

/* Keep a record PostgreSQL refused at replay in refused.seg (never retried). */
void spool_keep_refused(struct spool *s, const struct ledger_rec *r);

/* ---- the format (pure; exposed for the replay and the unit tests) ---- */

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

/* Frame R into BUF (spool_frame_size(R) bytes). */
size_t spool_frame_size(const struct ledger_rec *r);
void spool_frame(const struct ledger_rec *r, unsigned char *buf);

/* Write a segment header for WORKER, SEQ, CREATED into BUF[SPOOL_FILE_HEADER]. */
void spool_file_header(unsigned char *buf, uint32_t worker, uint64_t seq, uint64_t created_ms);

struct spool_scan_cb {
    /* A valid frame at OFFSET: its record (decoded; the callback takes ownership). */
    void (*record)(void *arg, uint64_t offset, struct ledger_rec *r);
    /* Bytes [OFFSET, OFFSET + LEN) are not a valid frame; WHY says what is wrong. TAIL: nothing
     * valid follows them. */
    void (*cut)(void *arg, uint64_t offset, uint64_t len, const char *why, bool tail);
    void *arg;
};

/*
 * Scan the segment BUF (LEN bytes, header included). Returns -1 when the header is not a spool
 * header (the file is not a segment), else 0. *VALID_END: the end of the last valid frame.
 */
int spool_scan(const unsigned char *buf, size_t len, const struct spool_scan_cb *cb,
               uint64_t *valid_end);

#endif
