/* Replay of a wire recording: the recording read into exchanges (a request and its recorded
 * reply) and the matcher that answers a host's request with the reply recorded for it. No I/O:
 * bytes in, a verdict and reply bytes out; sim/dev_replay.c puts it on a link.
 *
 * Exchanges: consecutive "tx" events are one request and the "rx" events up to the next "tx" its
 * reply (Modbus: a "req" and the "rsp" that follows, "timeout" meaning no reply). "rx" before the
 * first "tx" is what the device sends when the link opens.
 *
 * Matching: the next exchange in order first; a request that is not the next one may be any
 * recorded occurrence of the same request, later ones first (the host polled less often than in
 * the recording), then earlier ones nearest first (it polled more often). Hamilton STAR command
 * ids ("id" and 4 digits) match any 4 digits and the reply carries the host's id.
 *
 * Line terminators: a recorded request that does not end in CR or LF (a USB recording of the
 * STAR, one transfer per command) also matches when the host sends it followed by CR LF or CR, as
 * it does on a serial or TCP link; the reply then carries the same terminator (unless its
 * recording ends in CR or LF already). Once the link has sent a terminator, a request without one
 * waits for it (replay_match_final decides when the link has been quiet). */
#ifndef LAB_SIM_REPLAY_H
#define LAB_SIM_REPLAY_H

#include <stddef.h>
#include <stdint.h>

typedef enum replay_link {
    REPLAY_LINK_BYTES,      /* tx/rx recordings: the bytes as recorded */
    REPLAY_LINK_MODBUS_TCP, /* req/rsp: a request is unit byte + PDU; the link adds the MBAP */
    REPLAY_LINK_MODBUS_RTU, /* req/rsp: unit byte + PDU + CRC, as on a serial line */
} replay_link_t;

typedef struct replay_xchg {
    uint8_t *req, *rsp;
    size_t req_len, rsp_len; /* rsp_len 0: the device did not answer */
    int line;                /* the recording's line of the request */
    int uses;
} replay_xchg_t;

typedef struct replay {
    char id[64];     /* the header's instrument id */
    char driver[64]; /* the header's driver (informative) */
    int modbus;      /* a req/rsp recording */
    int ids;         /* STAR id tolerance on (byte recordings) */
    replay_link_t link;
    replay_xchg_t *x;
    int n, cap;
    uint8_t *greeting; /* rx before the first tx */
    size_t greeting_len;
    int cursor;       /* the exchange expected next */
    uint8_t *scratch; /* the last answer, with the host's STAR id */
    size_t term_len;  /* the terminator the link sent last after a request (0: none yet) */
    long answered;    /* counted by replay_match */
    long unseen;      /* counted by the link that reports them */
} replay_t;

typedef enum replay_verdict {
    REPLAY_MATCH,   /* hit.index answers the first hit.consumed bytes */
    REPLAY_PARTIAL, /* the bytes so far begin a recorded request: wait for more (hit.index the
                     * nearest, hit.offset = n) */
    REPLAY_UNSEEN,  /* no recorded request; hit.index the nearest, hit.offset where it differs */
} replay_verdict_t;

typedef struct replay_hit {
    int index;
    size_t consumed; /* the request's bytes and the host's terminator (term_len of them) */
    size_t offset;
    size_t term_len; /* 1 (CR) or 2 (CR LF) when the host ended the request with it */
} replay_hit_t;

/* Reads a recording; 0, or a negative LAB_E* with "path:line: reason" in err. A recording must
 * hold one kind only (tx/rx or req/rsp) and at least one request. */
int replay_load(replay_t *rp, const char *path, char *err, size_t errcap);
/* Frames the requests and replies for the link they are served on (Modbus recordings only:
 * REPLAY_LINK_MODBUS_RTU adds the CRC). -1 when the link does not fit the recording. */
int replay_set_link(replay_t *rp, replay_link_t link);
void replay_free(replay_t *rp);

/* The verdict on the bytes a host sent so far (buf, n > 0). On REPLAY_MATCH the recording's
 * position moves past the exchange used (a later one) or stays (an earlier one, a repeat). */
replay_verdict_t replay_match(replay_t *rp, const uint8_t *buf, size_t n, replay_hit_t *hit);
/* The same once the host has been quiet: a request whose terminator may still have been coming
 * (the link sent CR LF before, or a CR ends buf) is taken as it is. */
replay_verdict_t replay_match_final(replay_t *rp, const uint8_t *buf, size_t n, replay_hit_t *hit);
/* The reply for a match, with the host's STAR ids put in and its terminator added; *len bytes
 * (0: answer nothing). Valid until the next call. */
const uint8_t *replay_answer(replay_t *rp, const replay_hit_t *hit, const uint8_t *buf,
                             size_t *len);
/* bytes as printable text: printable ASCII as is, \r \n \t \\ \" and \xNN otherwise; truncated
 * with "..." to fit cap. */
void replay_printable(const uint8_t *p, size_t n, char *out, size_t cap);
#endif
