/* A recorded instrument on labloop-sim's link: bytes from the host go to the matcher
 * (sim/replay.h), a match is answered with its recorded reply, and a request the recording never
 * saw is reported on stderr (printable, with the byte where it parts from the nearest recorded
 * request) and not answered: a host that sends something new learns nothing made up. With
 * --strict the simulator stops there; otherwise it goes on and exits with status 3 at its end. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "sim/device.h"
#include "sim/log.h"
#include "sim/replay.h"

/* A request the host began and did not finish within this long is reported as unseen. */
#define REPLAY_QUIET_MS 1000
/* More bytes than this without a complete request: the host is not speaking the recording. */
#define REPLAY_BUF_MAX 65536
/* Modbus TCP: MBAP header (transaction, protocol, length) before the unit byte. */
#define MBAP_LEN 6

static atomic_long g_unseen;

long sim_replay_unseen_total(void)
{
    return atomic_load(&g_unseen);
}

/* Modbus requests are shown as "unit N: PDU in hex"; bytes as printable text. */
static void show(const replay_t *rp, const uint8_t *p, size_t n, char *out, size_t cap)
{
    if (!rp->modbus || n == 0) {
        replay_printable(p, n, out, cap);
        return;
    }
    size_t o = (size_t)snprintf(out, cap, "unit %u:", p[0]);
    for (size_t i = 1; i < n && o + 4 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, " %02x", p[i]);
}

static void report_unseen(sim_inst_t *in, const uint8_t *buf, size_t n, const replay_hit_t *hit)
{
    replay_t *rp = in->replay;
    char got[1024], near[1024];
    rp->unseen++;
    show(rp, buf, n, got, sizeof got);
    atomic_fetch_add(&g_unseen, 1);
    const char *which = rp->unseen == 1 ? "first" : "another";
    if (hit->index < 0) {
        sim_error("replay", "%s: %s request the recording never saw (%zu bytes): \"%s\"",
                  in->cfg->id, which, n, got);
    } else {
        const replay_xchg_t *x = &rp->x[hit->index];
        show(rp, x->req, x->req_len, near, sizeof near);
        sim_error("replay",
                  "%s: %s request the recording never saw (%zu bytes): \"%s\"; it differs at byte "
                  "offset %zu from the nearest recorded request (line %d, %zu bytes): \"%s\"",
                  in->cfg->id, which, n, got, hit->offset, x->line, x->req_len, near);
    }
}

/* --strict: stop at the first unseen request, once the bytes in hand are dealt with (stopping
 * frees the recording). */
static void strict_check(sim_inst_t *in)
{
    if (in->sim->cfg.replay_strict && in->replay->unseen && !in->sim->stopping) {
        sim_error("replay", "%s: --strict: stopping", in->cfg->id);
        sim_stop(in->sim);
    }
}

static void send_answer(sim_inst_t *in, const replay_hit_t *hit, const uint8_t *req,
                        const uint8_t *mbap)
{
    size_t len;
    const uint8_t *a = replay_answer(in->replay, hit, req, &len);
    if (!len)
        return; /* recorded without an answer */
    if (!mbap) {
        sim_inst_send(in, a, len);
        return;
    }
    uint8_t frame[MBAP_LEN + 256]; /* one write: a Modbus TCP client may read the frame once */
    if (len > 256) { /* no Modbus PDU is this long: the recording is wrong, not the host */
        sim_error("replay", "%s: recorded answer of %zu bytes is longer than a Modbus PDU (253)",
                  in->cfg->id, len);
        return;
    }
    memcpy(frame, mbap, 2); /* the request's transaction id */
    frame[2] = frame[3] = 0;
    frame[4] = (uint8_t)(len >> 8);
    frame[5] = (uint8_t)len;
    memcpy(frame + MBAP_LEN, a, len);
    sim_inst_send(in, frame, MBAP_LEN + len);
}

static void consume(sim_inst_t *in, size_t n)
{
    memmove(in->rbuf, in->rbuf + n, in->rlen - n);
    in->rlen -= n;
}

static void feed_bytes(sim_inst_t *in);

/* The host went quiet in the middle of a request: a whole recorded request still waiting for a
 * terminator is answered as it is; anything else is unseen. */
static void quiet_due(uv_timer_t *t)
{
    sim_inst_t *in = t->data;
    replay_hit_t hit;
    if (!in->rlen)
        return;
    if (replay_match_final(in->replay, in->rbuf, in->rlen, &hit) == REPLAY_MATCH) {
        send_answer(in, &hit, in->rbuf, NULL);
        consume(in, hit.consumed);
        feed_bytes(in);
        strict_check(in);
        return;
    }
    hit.offset = in->rlen; /* PARTIAL: hit.index is the nearest request */
    size_t n = in->rlen;
    in->rlen = 0;
    report_unseen(in, in->rbuf, n, &hit);
    strict_check(in);
}

/* Byte streams (and Modbus RTU, whose frames are bytes with their CRC): requests are found by
 * their bytes, however the host's writes were cut. */
static void feed_bytes(sim_inst_t *in)
{
    while (in->rlen) {
        replay_hit_t hit;
        switch (replay_match(in->replay, in->rbuf, in->rlen, &hit)) {
        case REPLAY_MATCH:
            send_answer(in, &hit, in->rbuf, NULL);
            consume(in, hit.consumed);
            break;
        case REPLAY_PARTIAL:
            uv_timer_start(&in->step, quiet_due, REPLAY_QUIET_MS, 0);
            return;
        case REPLAY_UNSEEN: {
            size_t n = in->rlen;
            in->rlen = 0;
            report_unseen(in, in->rbuf, n, &hit);
            return;
        }
        }
    }
}

/* Modbus TCP: the MBAP header frames each request; its unit byte and PDU are what is matched,
 * and the answer goes back under the request's transaction id. */
static void feed_mbap(sim_inst_t *in)
{
    while (in->rlen >= MBAP_LEN + 2) {
        size_t len = (size_t)in->rbuf[4] << 8 | in->rbuf[5];
        replay_hit_t hit = {.index = -1};
        if (len < 2 || len > 254 || in->rbuf[2] || in->rbuf[3]) {
            size_t n = in->rlen;
            in->rlen = 0;
            report_unseen(in, in->rbuf, n, &hit); /* not Modbus TCP at all */
            return;
        }
        if (in->rlen < MBAP_LEN + len)
            return;
        const uint8_t *key = in->rbuf + MBAP_LEN;
        if (replay_match(in->replay, key, len, &hit) == REPLAY_MATCH && hit.consumed == len)
            send_answer(in, &hit, key, in->rbuf);
        else
            report_unseen(in, key, len, &hit);
        consume(in, MBAP_LEN + len);
    }
}

void sim_replay_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    uv_timer_stop(&in->step);
    if (in->rlen + n > REPLAY_BUF_MAX) {
        replay_hit_t hit = {.index = -1};
        size_t have = in->rlen;
        in->rlen = 0;
        report_unseen(in, in->rbuf, have, &hit);
        if (n > REPLAY_BUF_MAX)
            return;
    }
    if (!in->rbuf && !(in->rbuf = malloc(REPLAY_BUF_MAX)))
        return;
    memcpy(in->rbuf + in->rlen, data, n);
    in->rlen += n;
    if (in->replay->link == REPLAY_LINK_MODBUS_TCP)
        feed_mbap(in);
    else
        feed_bytes(in);
    strict_check(in);
}

void sim_replay_link_open(sim_inst_t *in)
{
    in->rlen = 0;
    uv_timer_stop(&in->step);
    if (in->replay->greeting_len)
        sim_inst_send(in, in->replay->greeting, in->replay->greeting_len);
}

void sim_replay_stop(sim_inst_t *in)
{
    replay_t *rp = in->replay;
    int used = 0;
    for (int i = 0; i < rp->n; i++)
        used += rp->x[i].uses > 0;
    sim_info("replay", "%s: %ld requests answered, %ld unseen; %d of %d recorded exchanges used",
             in->cfg->id, rp->answered, rp->unseen, used, rp->n);
    replay_free(rp);
    free(rp);
    free(in->rbuf);
    in->replay = NULL;
    in->rbuf = NULL;
    in->rlen = 0;
}
