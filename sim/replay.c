/* Replay: a recording's exchanges and the matcher (see replay.h for the rules). */
#include "sim/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/proto.h"
#include "protocols/wire_read.h"

static int buf_append(uint8_t **p, size_t *len, const uint8_t *add, size_t n)
{
    uint8_t *q = realloc(*p, *len + n);
    if (!q)
        return LAB_ENOMEM;
    memcpy(q + *len, add, n);
    *p = q;
    *len += n;
    return 0;
}

static replay_xchg_t *xchg_new(replay_t *rp, int line)
{
    if (rp->n == rp->cap) {
        int cap = rp->cap ? rp->cap * 2 : 64;
        replay_xchg_t *x = realloc(rp->x, (size_t)cap * sizeof *x);
        if (!x)
            return NULL;
        rp->x = x;
        rp->cap = cap;
    }
    replay_xchg_t *x = &rp->x[rp->n++];
    memset(x, 0, sizeof *x);
    x->line = line;
    return x;
}

/* One event into the exchanges. last: the kind of the previous data event (tx/rx/req/rsp). */
static int take(replay_t *rp, const wire_item_t *it, wire_kind_t *last, char *why, size_t cap)
{
    replay_xchg_t *cur = rp->n ? &rp->x[rp->n - 1] : NULL;
    int is_modbus = it->kind == WIRE_REQ || it->kind == WIRE_RSP;
    if ((it->kind == WIRE_TX || it->kind == WIRE_RX || is_modbus) && *last != WIRE_HEADER &&
        ((*last == WIRE_REQ || *last == WIRE_RSP) != is_modbus)) {
        snprintf(why, cap, "\"%s\" in a recording of %s", wire_kind_name(it->kind),
                 is_modbus ? "tx/rx bytes" : "Modbus req/rsp");
        return LAB_ESYNTAX;
    }
    uint8_t unit = (uint8_t)it->unit;
    switch (it->kind) {
    case WIRE_TX:
        if (*last != WIRE_TX && !(cur = xchg_new(rp, it->line)))
            return LAB_ENOMEM;
        *last = WIRE_TX;
        return buf_append(&cur->req, &cur->req_len, it->data, it->len);
    case WIRE_RX:
        if (!cur) /* before any request: sent when the link opens */
            return buf_append(&rp->greeting, &rp->greeting_len, it->data, it->len);
        *last = WIRE_RX;
        return buf_append(&cur->rsp, &cur->rsp_len, it->data, it->len);
    case WIRE_REQ:
        rp->modbus = 1;
        if (!(cur = xchg_new(rp, it->line)))
            return LAB_ENOMEM;
        *last = WIRE_REQ;
        if (buf_append(&cur->req, &cur->req_len, &unit, 1))
            return LAB_ENOMEM;
        return buf_append(&cur->req, &cur->req_len, it->data, it->len);
    case WIRE_RSP:
        if (*last != WIRE_REQ) {
            snprintf(why, cap, "a \"rsp\" that follows no \"req\"");
            return LAB_ESYNTAX;
        }
        if (unit != cur->req[0]) {
            snprintf(why, cap, "\"rsp\" of unit %d answers a \"req\" to unit %d", it->unit,
                     cur->req[0]);
            return LAB_ESYNTAX;
        }
        *last = WIRE_RSP;
        if (buf_append(&cur->rsp, &cur->rsp_len, &unit, 1))
            return LAB_ENOMEM;
        return buf_append(&cur->rsp, &cur->rsp_len, it->data, it->len);
    case WIRE_EV:
        /* A timeout closes a Modbus request unanswered; other link events change nothing the
         * host could match on. */
        if (it->ev == WIRE_EV_TIMEOUT && *last == WIRE_REQ)
            *last = WIRE_RSP;
        return 0;
    case WIRE_HEADER:
        return 0;
    }
    return 0;
}

int replay_load(replay_t *rp, const char *path, char *err, size_t errcap)
{
    memset(rp, 0, sizeof *rp);
    wire_reader_t r;
    wire_item_t it;
    wire_kind_t last = WIRE_HEADER;
    int rc;
    if ((rc = wire_reader_open(&r, path, err, errcap)) != 0)
        return rc;
    while ((rc = wire_reader_next(&r, &it, err, errcap)) == 1) {
        char why[200];
        rc = 0;
        if (it.kind == WIRE_HEADER && !rp->id[0]) {
            snprintf(rp->id, sizeof rp->id, "%s", it.id);
            snprintf(rp->driver, sizeof rp->driver, "%s", it.driver);
        } else if (it.kind == WIRE_HEADER && strcmp(it.id, rp->id) != 0) {
            snprintf(err, errcap, "%s:%d: header of instrument '%s' in a recording of '%s'", path,
                     it.line, it.id, rp->id);
            rc = LAB_ESYNTAX;
        }
        if (!rc && (rc = take(rp, &it, &last, why, sizeof why)))
            snprintf(err, errcap, "%s:%d: %s", path, it.line,
                     rc == LAB_ENOMEM ? "out of memory" : why);
        wire_item_clear(&it);
        if (rc)
            break;
    }
    wire_reader_close(&r);
    if (!rc && rp->n == 0) {
        snprintf(err, errcap, "%s: no request in the recording", path);
        rc = LAB_ESYNTAX;
    }
    if (rc) {
        replay_free(rp);
        return rc < 0 ? rc : LAB_ESYNTAX;
    }
    rp->ids = !rp->modbus;
    rp->link = rp->modbus ? REPLAY_LINK_MODBUS_TCP : REPLAY_LINK_BYTES;
    return 0;
}

/* Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first. */
static uint16_t crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0xFFFF;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
    }
    return crc;
}

static int add_crc(uint8_t **p, size_t *len)
{
    uint16_t c = crc16(*p, *len);
    uint8_t two[2] = {(uint8_t)(c & 0xFF), (uint8_t)(c >> 8)};
    return buf_append(p, len, two, 2);
}

int replay_set_link(replay_t *rp, replay_link_t link)
{
    if ((link == REPLAY_LINK_BYTES) == rp->modbus)
        return -1;
    if (link == rp->link)
        return 0;
    if (link != REPLAY_LINK_MODBUS_RTU || rp->link != REPLAY_LINK_MODBUS_TCP)
        return -1;
    for (int i = 0; i < rp->n; i++)
        if (add_crc(&rp->x[i].req, &rp->x[i].req_len) ||
            (rp->x[i].rsp_len && add_crc(&rp->x[i].rsp, &rp->x[i].rsp_len)))
            return -1;
    rp->link = link;
    return 0;
}

void replay_free(replay_t *rp)
{
    for (int i = 0; i < rp->n; i++) {
        free(rp->x[i].req);
        free(rp->x[i].rsp);
    }
    free(rp->x);
    free(rp->greeting);
    free(rp->scratch);
    memset(rp, 0, sizeof *rp);
}

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* Where a STAR id ("id" + 4 digits) starts in rec at or before j covering j's digits, or -1. */
static long id_at(const uint8_t *rec, size_t len, size_t j)
{
    for (size_t k = j >= 5 ? j - 5 : 0; k + 1 < len && k + 2 <= j; k++)
        if (rec[k] == 'i' && rec[k + 1] == 'd' && k + 6 <= len && is_digit(rec[k + 2]) &&
            is_digit(rec[k + 3]) && is_digit(rec[k + 4]) && is_digit(rec[k + 5]) && j <= k + 5)
            return (long)k;
    return -1;
}

/* How many leading bytes of buf agree with the recorded request (ids tolerated). */
static size_t agree(const replay_t *rp, const replay_xchg_t *x, const uint8_t *buf, size_t n)
{
    size_t m = n < x->req_len ? n : x->req_len;
    for (size_t j = 0; j < m; j++) {
        if (buf[j] == x->req[j])
            continue;
        if (rp->ids && is_digit(buf[j]) && is_digit(x->req[j]) && id_at(x->req, x->req_len, j) >= 0)
            continue;
        return j;
    }
    return m;
}

/* Among requests that agree as far, the nearest is the one with most bytes in common at the same
 * places and the closest length: "01 08 14 00 01" is nearer "02 08 14 00 01" than "10 10 01". */
static long likeness(const replay_xchg_t *x, const uint8_t *buf, size_t n)
{
    size_t m = n < x->req_len ? n : x->req_len;
    long same = 0;
    for (size_t j = 0; j < m; j++)
        same += buf[j] == x->req[j];
    return same - (long)(n > x->req_len ? n - x->req_len : x->req_len - n);
}

/* The order in which exchanges are tried: the cursor, later ones, then earlier ones nearest
 * first. */
static int candidate(const replay_t *rp, int k)
{
    int ahead = rp->n - rp->cursor;
    if (k < ahead)
        return rp->cursor + k;
    return rp->cursor - 1 - (k - ahead);
}

/* Whether a recorded request is one a link may add its terminator to: a byte recording's request
 * that does not end in CR or LF itself. */
static int tolerant(const replay_t *rp, const replay_xchg_t *x)
{
    if (rp->modbus || !x->req_len)
        return 0;
    uint8_t last = x->req[x->req_len - 1];
    return last != '\r' && last != '\n';
}

/* The host's terminator at rest (the bytes after a whole recorded request): 2 for CR LF, 1 for a
 * CR followed by something else, 0 for none, -1 for a CR that ends the bytes while an LF may
 * still come (not final, and the link did not end its last request with a CR alone). */
static int term_after(const replay_t *rp, const uint8_t *rest, size_t rn, int final)
{
    if (!rn || rest[0] != '\r')
        return 0;
    if (rn >= 2)
        return rest[1] == '\n' ? 2 : 1;
    return final || rp->term_len == 1 ? 1 : -1;
}

static replay_verdict_t matched(replay_t *rp, int i, size_t consumed, size_t term,
                                replay_hit_t *hit)
{
    hit->index = i;
    hit->consumed = consumed;
    hit->term_len = term;
    if (term)
        rp->term_len = term;
    if (i >= rp->cursor)
        rp->cursor = i + 1;
    rp->x[i].uses++;
    rp->answered++;
    return REPLAY_MATCH;
}

static replay_verdict_t match(replay_t *rp, const uint8_t *buf, size_t n, replay_hit_t *hit,
                              int final)
{
    hit->index = -1;
    hit->consumed = hit->offset = hit->term_len = 0;
    size_t best = 0;
    long best_like = 0;
    int partial = 0, pipelined = -1;
    for (int k = 0; k < rp->n; k++) {
        int i = candidate(rp, k);
        const replay_xchg_t *x = &rp->x[i];
        size_t a = agree(rp, x, buf, n);
        if (a == x->req_len && n == x->req_len) {
            /* a link that ended its requests with a terminator is sending this one's next */
            if (tolerant(rp, x) && rp->term_len && !final)
                partial = 1;
            else
                return matched(rp, i, n, 0, hit);
        } else if (a == x->req_len && tolerant(rp, x)) {
            int t = term_after(rp, buf + a, n - a, final);
            if (t > 0)
                return matched(rp, i, a + (size_t)t, (size_t)t, hit);
            if (t < 0)
                partial = 1;
        }
        if (a == n) /* buf is the start of this request */
            partial = 1;
        else if (a == x->req_len && pipelined < 0) /* this request, then the next one's bytes */
            pipelined = i;
        if (a > best || hit->index < 0 || (a == best && likeness(x, buf, n) > best_like)) {
            best = a;
            best_like = likeness(x, buf, n);
            hit->index = i;
        }
    }
    hit->offset = best;
    if (partial)
        return REPLAY_PARTIAL;
    if (pipelined >= 0)
        return matched(rp, pipelined, rp->x[pipelined].req_len, 0, hit);
    return REPLAY_UNSEEN;
}

replay_verdict_t replay_match(replay_t *rp, const uint8_t *buf, size_t n, replay_hit_t *hit)
{
    return match(rp, buf, n, hit, 0);
}

replay_verdict_t replay_match_final(replay_t *rp, const uint8_t *buf, size_t n, replay_hit_t *hit)
{
    return match(rp, buf, n, hit, 1);
}

const uint8_t *replay_answer(replay_t *rp, const replay_hit_t *hit, const uint8_t *buf, size_t *len)
{
    const replay_xchg_t *x = &rp->x[hit->index];
    *len = 0;
    if (!x->rsp_len)
        return NULL;
    /* the host's terminator after the reply, unless the recorded reply ends in one already */
    uint8_t last = x->rsp[x->rsp_len - 1];
    size_t term = last == '\r' || last == '\n' ? 0 : hit->term_len;
    uint8_t *out = realloc(rp->scratch, x->rsp_len + term);
    if (!out)
        return NULL;
    rp->scratch = out;
    memcpy(out, x->rsp, x->rsp_len);
    memcpy(out + x->rsp_len, buf + hit->consumed - hit->term_len, term);
    *len = x->rsp_len + term;
    if (!rp->ids)
        return out;
    /* Each recorded id of the request ("id" + 4 digits) that the reply echoes becomes the host's.
     */
    for (size_t j = 0; j + 6 <= x->req_len && j + 6 <= hit->consumed; j++) {
        if (id_at(x->req, x->req_len, j + 2) != (long)j)
            continue;
        for (size_t k = 0; k + 6 <= x->rsp_len; k++)
            if (memcmp(out + k, x->req + j, 6) == 0 &&
                (k + 6 == x->rsp_len || !is_digit(out[k + 6])))
                memcpy(out + k + 2, buf + j + 2, 4);
    }
    return out;
}

void replay_printable(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    if (!cap)
        return;
    for (size_t i = 0; i < n; i++) {
        char one[8];
        uint8_t c = p[i];
        if (c == '\r')
            snprintf(one, sizeof one, "\\r");
        else if (c == '\n')
            snprintf(one, sizeof one, "\\n");
        else if (c == '\t')
            snprintf(one, sizeof one, "\\t");
        else if (c == '\\' || c == '"')
            snprintf(one, sizeof one, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            snprintf(one, sizeof one, "%c", c);
        else
            snprintf(one, sizeof one, "\\x%02x", c);
        size_t l = strlen(one);
        if (o + l + 4 > cap) { /* room for "..." and the NUL */
            snprintf(out + o, cap - o, "...");
            return;
        }
        memcpy(out + o, one, l);
        o += l;
    }
    out[o] = '\0';
}
