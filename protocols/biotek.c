/* BioTek Synergy / Cytation codec. Sources are listed in biotek.h. */
#include "protocols/biotek.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const biotek_cmd_info_t commands[] = {
    {'e', BIOTEK_PARAM_NONE, 0, 0, "firmware version"},
    {'C', BIOTEK_PARAM_NONE, 0, 0, "serial number"},
    {'h', BIOTEK_PARAM_NONE, 0, 0, "current temperature"},
    {'J', BIOTEK_PARAM_NONE, 0, 0, "open tray"},
    {'A', BIOTEK_PARAM_NONE, 0, 0, "close tray"},
    {'O', BIOTEK_PARAM_NONE, 0, 0, "run defined read"},
    {'x', BIOTEK_PARAM_NONE, 0, 1, "abort"},
    {'i', BIOTEK_PARAM_FIXED, 1, 0, "home"},
    {'&', BIOTEK_PARAM_FIXED, 2, 0, "slow mode"},
    {'g', BIOTEK_PARAM_FIXED, 5, 0, "set temperature"},
    {'y', BIOTEK_PARAM_ETX, 0, 0, "plate geometry"},
    {'D', BIOTEK_PARAM_ETX, 0, 0, "read definition"},
    {'t', BIOTEK_PARAM_ETX, 0, 0, "focal height"},
};

const biotek_cmd_info_t *biotek_cmd_info(char letter)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].letter == letter)
            return &commands[i];
    return NULL;
}

/* ---- reply receiver ---- */

void biotek_rx_init(biotek_rx_t *rx)
{
    rx->expect = BIOTEK_EXPECT_ETX;
    rx->len = 0;
    rx->overflow = 0;
}

void biotek_rx_expect(biotek_rx_t *rx, biotek_expect_t e)
{
    rx->expect = e;
    rx->len = 0;
    rx->overflow = 0;
}

size_t biotek_rx_feed(biotek_rx_t *rx, const uint8_t *data, size_t n, biotek_frame_cb cb, void *ud)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = data[i];
        if (rx->expect == BIOTEK_EXPECT_ACK) {
            if (c == BIOTEK_ACK) {
                rx->overflow = 0;
                biotek_frame_t f = {1, "", 0};
                if (cb(ud, &f, LAB_OK))
                    return i + 1;
            } else if (!rx->overflow) {
                /* One report per run of noise, not one per byte. */
                rx->overflow = 1;
                if (cb(ud, NULL, LAB_EGARBAGE))
                    return i + 1;
            }
            continue;
        }
        if (c == BIOTEK_ETX) {
            int stop;
            if (rx->overflow) {
                rx->overflow = 0;
                rx->len = 0;
                continue;
            }
            rx->buf[rx->len] = '\0';
            int ack = rx->len > 0 && rx->buf[0] == BIOTEK_ACK;
            biotek_frame_t f = {ack, rx->buf + ack, rx->len - (size_t)ack};
            stop = cb(ud, &f, LAB_OK);
            rx->len = 0;
            if (stop)
                return i + 1;
            continue;
        }
        if (rx->overflow)
            continue;
        if (rx->len == BIOTEK_FRAME_MAX) {
            rx->overflow = 1;
            rx->len = 0;
            if (cb(ud, NULL, LAB_ETOOLONG))
                return i + 1;
            continue;
        }
        rx->buf[rx->len++] = (char)c;
    }
    return n;
}

/* ---- absorbance definition ---- */

static const char abs_prefix[] = "004701";
/* Fixed fields between the rectangle and the wavelength, as sent by the vendor software. */
static const char abs_middle[] = "000120010000110010000010600008";
#define ABS_LEN (6 + 8 + 30 + 4 + 1 + 2)

static int checksum100(const char *s, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (uint8_t)s[i];
    return (int)(sum % 100);
}

static int rect_ok(const biotek_rect_t *r)
{
    return r->row0 >= 1 && r->col0 >= 1 && r->row0 <= r->row1 && r->col0 <= r->col1 &&
           r->row1 <= BIOTEK_MAX_ROWS && r->col1 <= BIOTEK_MAX_COLS;
}

int biotek_encode_absorbance(const biotek_rect_t *r, int wavelength_nm, char *buf, size_t cap)
{
    /* 230-999 nm is the reader's absorbance range (abs_wavelength_range). */
    if (!rect_ok(r) || wavelength_nm < 230 || wavelength_nm > 999)
        return LAB_ERANGE;
    char body[ABS_LEN + 1];
    int n = snprintf(body, sizeof body, "%s%02d%02d%02d%02d%s%04d1", abs_prefix, r->row0, r->col0,
                     r->row1, r->col1, abs_middle, wavelength_nm);
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_mem(&o, body, (size_t)n);
    proto_out_fmt(&o, "%02d\x03", checksum100(body, (size_t)n));
    return proto_out_result(&o);
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return LAB_ESYNTAX;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return LAB_OK;
}

int biotek_parse_absorbance(const char *s, size_t len, biotek_rect_t *r, int *wavelength_nm)
{
    if (len != ABS_LEN)
        return LAB_ESYNTAX;
    if (memcmp(s, abs_prefix, 6) != 0 || memcmp(s + 14, abs_middle, 30) != 0 || s[48] != '1')
        return LAB_EUNKNOWN;
    int f[6], sum;
    for (int i = 0; i < 4; i++)
        if (digits(s + 6 + 2 * i, 2, &f[i]))
            return LAB_ESYNTAX;
    if (digits(s + 44, 4, &f[4]) || digits(s + 49, 2, &sum))
        return LAB_ESYNTAX;
    if (sum != checksum100(s, 49))
        return LAB_ECHECKSUM;
    *r = (biotek_rect_t){f[0], f[1], f[2], f[3]};
    *wavelength_nm = f[4];
    return rect_ok(r) && f[4] >= 230 && f[4] <= 999 ? LAB_OK : LAB_ERANGE;
}

/* ---- small replies ---- */

static int token(const char **p, const char *end, const char **tok, size_t *tlen)
{
    while (*p < end && **p == ' ')
        (*p)++;
    *tok = *p;
    while (*p < end && **p != ' ')
        (*p)++;
    *tlen = (size_t)(*p - *tok);
    return *tlen > 0;
}

static int copy_out(const char *s, size_t n, char *out, size_t cap)
{
    if (n + 1 > cap)
        return LAB_ENOSPACE;
    memcpy(out, s, n);
    out[n] = '\0';
    return LAB_OK;
}

int biotek_parse_version(const char *payload, size_t len, char *part, size_t part_cap,
                         char *version, size_t version_cap)
{
    const char *p = payload, *end = payload + len, *t;
    size_t tl;
    if (!token(&p, end, &t, &tl))
        return LAB_ESYNTAX;
    int rc = copy_out(t, tl, part, part_cap);
    if (rc)
        return rc;
    while (token(&p, end, &t, &tl)) {
        if (tl == 7 && memcmp(t, "Version", 7) == 0) {
            if (!token(&p, end, &t, &tl))
                return LAB_ESYNTAX;
            return copy_out(t, tl, version, version_cap);
        }
    }
    return LAB_ESYNTAX;
}

int biotek_parse_temperature(const char *payload, size_t len, double *celsius)
{
    int neg = len > 0 && payload[0] == '-';
    if (len - (size_t)neg < 1 || len - (size_t)neg > 9)
        return LAB_ESYNTAX;
    int v;
    if (digits(payload + neg, (int)(len - (size_t)neg), &v))
        return LAB_ESYNTAX;
    *celsius = (neg ? -v : v) / 100000.0;
    return LAB_OK;
}

int biotek_encode_temperature(double celsius, char *buf, size_t cap)
{
    if (!isfinite(celsius) || celsius < 0 || celsius > 99)
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "%c%07ld%c", BIOTEK_ACK, lround(celsius * 100000), BIOTEK_ETX);
    return proto_out_result(&o);
}

static int encode_frame(int ack, const char *payload, char *buf, size_t cap)
{
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    /* A payload carrying ETX would end the frame early on the other side. */
    if (strchr(payload, BIOTEK_ETX))
        return LAB_ESYNTAX;
    if (ack)
        proto_out_mem(&o, "\x06", 1);
    proto_out_mem(&o, payload, strlen(payload));
    proto_out_mem(&o, "\x03", 1);
    return proto_out_result(&o);
}

int biotek_encode_reply(const char *payload, char *buf, size_t cap)
{
    return encode_frame(1, payload, buf, cap);
}

int biotek_encode_status(const char *payload, char *buf, size_t cap)
{
    return encode_frame(0, payload, buf, cap);
}

/* ---- plate geometry, set point, status, serial number ---- */

/* The geometry's fields in wire order, with their widths in digits. */
static const struct {
    size_t off;
    int width;
} geometry_fields[] = {
    {offsetof(biotek_geometry_t, rows), 2},   {offsetof(biotek_geometry_t, cols), 2},
    {offsetof(biotek_geometry_t, a1_y), 5},   {offsetof(biotek_geometry_t, last_y), 5},
    {offsetof(biotek_geometry_t, a1_x), 5},   {offsetof(biotek_geometry_t, last_x), 5},
    {offsetof(biotek_geometry_t, size_y), 5}, {offsetof(biotek_geometry_t, size_x), 5},
    {offsetof(biotek_geometry_t, size_z), 4},
};
#define N_GEOMETRY_FIELDS (sizeof geometry_fields / sizeof geometry_fields[0])

static int geometry_ok(const biotek_geometry_t *g)
{
    static const int limit[] = {0, 0, 100000, 100000, 100000, 100000, 100000, 100000, 10000};
    if (g->rows < 1 || g->rows > BIOTEK_MAX_ROWS || g->cols < 1 || g->cols > BIOTEK_MAX_COLS)
        return 0;
    for (size_t i = 2; i < N_GEOMETRY_FIELDS; i++) {
        int v = *(const int *)((const char *)g + geometry_fields[i].off);
        if (v < 0 || v >= limit[i])
            return 0;
    }
    return 1;
}

int biotek_encode_geometry(const biotek_geometry_t *g, char *buf, size_t cap)
{
    if (!geometry_ok(g))
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    for (size_t i = 0; i < N_GEOMETRY_FIELDS; i++)
        proto_out_fmt(&o, "%0*d", geometry_fields[i].width,
                      *(const int *)((const char *)g + geometry_fields[i].off));
    proto_out_mem(&o, "\x03", 1);
    return proto_out_result(&o);
}

int biotek_parse_geometry(const char *s, size_t len, biotek_geometry_t *g)
{
    if (len != BIOTEK_GEOMETRY_LEN)
        return LAB_ESYNTAX;
    for (size_t i = 0, off = 0; i < N_GEOMETRY_FIELDS; off += (size_t)geometry_fields[i++].width)
        if (digits(s + off, geometry_fields[i].width, (int *)((char *)g + geometry_fields[i].off)))
            return LAB_ESYNTAX;
    return geometry_ok(g) ? LAB_OK : LAB_ERANGE;
}

int biotek_encode_setpoint(double celsius, char *buf, size_t cap)
{
    if (!isfinite(celsius) || celsius < 0 || lround(celsius * 1000) > 99999)
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    /* Rounded, not truncated: 36.6 * 1000 is 36599.99... in binary. */
    proto_out_fmt(&o, "%05ld", lround(celsius * 1000));
    return proto_out_result(&o);
}

int biotek_parse_setpoint(const char *s, size_t len, double *celsius)
{
    int v;
    if (len != 5 || digits(s, 5, &v))
        return LAB_ESYNTAX;
    *celsius = v / 1000.0;
    return LAB_OK;
}

int biotek_parse_status(const char *payload, size_t len, size_t *bad_at)
{
    size_t n = 0;
    while (n < len && payload[n] >= '0' && payload[n] <= '9')
        n++;
    if (n < len) {
        *bad_at = n;
        return LAB_ESYNTAX;
    }
    if (len == 0)
        return BIOTEK_STATUS_EMPTY;
    if (len == 4)
        return memcmp(payload, "0000", 4) == 0 ? BIOTEK_STATUS_OK : BIOTEK_STATUS_CODE;
    if (len == BIOTEK_READ_STATUS_LEN)
        return BIOTEK_STATUS_READ;
    *bad_at = len; /* digits, but not as many as any status has */
    return LAB_ESYNTAX;
}

int biotek_parse_serial(const char *payload, size_t len, char *serial, size_t cap)
{
    const char *p = payload, *end = payload + len, *t;
    size_t tl;
    if (!token(&p, end, &t, &tl) || t != payload)
        return LAB_ESYNTAX;
    return copy_out(t, tl, serial, cap);
}

/* ---- measurement body ---- */

#define BODY_HEADER 22

static int parse_index(const char *s, size_t n, int max, int *out)
{
    if (n < 1 || n > 2 || digits(s, (int)n, out) || *out < 1)
        return LAB_ESYNTAX;
    return *out <= max ? LAB_OK : LAB_ERANGE;
}

static int parse_value(const char *s, size_t n, double *v, int *novalue)
{
    if (n == 0 || n > 31)
        return LAB_ESYNTAX;
    size_t stars = 0;
    while (stars < n && s[stars] == '*')
        stars++;
    if (stars == n) {
        *novalue = 1;
        return LAB_OK;
    }
    char tmp[32];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    /* strtod would accept "inf", "nan" and hex; the reader sends only these characters. */
    if (strspn(tmp, "+-.0123456789") != n)
        return LAB_ESYNTAX;
    char *endp;
    *v = strtod(tmp, &endp);
    if (endp != tmp + n || !isfinite(*v))
        return LAB_ESYNTAX;
    *novalue = 0;
    return LAB_OK;
}

int biotek_parse_body(const char *body, size_t len, int rows, int cols, biotek_plate_t *out)
{
    if (rows < 1 || rows > BIOTEK_MAX_ROWS || cols < 1 || cols > BIOTEK_MAX_COLS)
        return LAB_ERANGE;
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    if (len < BODY_HEADER + 2 || body[BODY_HEADER - 1] != ',') {
        out->err_at = len < BODY_HEADER ? len : BODY_HEADER - 1;
        return LAB_ESYNTAX;
    }
    /* The data ends at the last CR LF; what follows is the trailer. */
    size_t end = len - 2;
    while (end > BODY_HEADER && !(body[end] == '\r' && body[end + 1] == '\n'))
        end--;
    if (end <= BODY_HEADER || !(body[end] == '\r' && body[end + 1] == '\n')) {
        out->err_at = len;
        return LAB_ESYNTAX;
    }
    /* Trailer "228\x1a041\x1a0000": a complete one is how a truncated body is told apart. */
    const char *t = body + end + 2;
    if (len - end - 2 != 12 || t[3] != 0x1a || t[7] != 0x1a || digits(t, 3, &out->code) ||
        digits(t + 4, 3, &out->trailer) || digits(t + 8, 4, &out->status)) {
        out->err_at = end + 2;
        return LAB_ESYNTAX;
    }

    size_t p = BODY_HEADER;
    const char *field[3];
    size_t flen[3];
    int nf = 0;
    for (;;) {
        size_t s = p;
        while (p < end && body[p] != ',' && body[p] != '\r')
            p++;
        field[nf] = body + s;
        flen[nf] = p - s;
        if (++nf == 3) {
            int r, c, novalue;
            double v = 0;
            int rc = parse_index(field[0], flen[0], rows, &r);
            if (!rc)
                rc = parse_index(field[1], flen[1], cols, &c);
            if (!rc)
                rc = parse_value(field[2], flen[2], &v, &novalue);
            if (rc) {
                out->err_at = (size_t)(field[0] - body);
                return rc;
            }
            out->value[r - 1][c - 1] = novalue ? NAN : v;
            out->state[r - 1][c - 1] = novalue ? BIOTEK_WELL_NOVALUE : BIOTEK_WELL_VALUE;
            out->n_triples++;
            nf = 0;
        }
        if (p == end)
            break;
        if (body[p] == ',') {
            p++;
        } else if (end - p >= 3 && body[p + 1] == '\n' && body[p + 2] == ',') {
            /* A row break may only fall between triples. */
            if (nf != 0) {
                out->err_at = p;
                return LAB_ESYNTAX;
            }
            p += 3;
        } else {
            out->err_at = p;
            return LAB_ESYNTAX;
        }
    }
    if (nf != 0 || out->n_triples == 0) {
        out->err_at = end;
        return LAB_ESYNTAX;
    }
    return LAB_OK;
}

int biotek_encode_body(const biotek_plate_t *plate, const biotek_rect_t *r, biotek_value_fmt_t fmt,
                       int code, char *buf, size_t cap)
{
    if (!rect_ok(r) || r->row1 > plate->rows || r->col1 > plate->cols || code < 0 || code > 999)
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "01,1,\r000:00:00.0,%03d,", code);
    for (int row = r->row0; row <= r->row1; row++) {
        int forward = (row - r->row0) % 2 == 0;
        if (row != r->row0)
            proto_out_mem(&o, "\r\n,", 3);
        for (int k = 0; k <= r->col1 - r->col0; k++) {
            int col = forward ? r->col0 + k : r->col1 - k;
            if (k > 0)
                proto_out_mem(&o, ",", 1);
            proto_out_fmt(&o, "%02d,%02d,", row, col);
            double v = plate->value[row - 1][col - 1];
            if (plate->state[row - 1][col - 1] != BIOTEK_WELL_VALUE) {
                proto_out_mem(&o, "*******", 7);
                continue;
            }
            /* Beyond what the reader can print; a simulator asking for it has a bug. */
            if (!isfinite(v) ||
                (fmt == BIOTEK_FMT_ABSORBANCE ? fabs(v) >= 1e6 : v < 0 || v > 9999999))
                return LAB_ERANGE;
            if (fmt == BIOTEK_FMT_ABSORBANCE)
                proto_out_fmt(&o, "%+.4f", v);
            else
                proto_out_fmt(&o, "%07ld", lround(v));
        }
    }
    /* Trailer: code, a field whose meaning is not documented (written as 000), status 0000. */
    proto_out_fmt(&o,
                  "\r\n%03d\x1a"
                  "000\x1a"
                  "0000\x03",
                  code);
    return proto_out_result(&o);
}

/* ---- command receiver (simulator side) ---- */

void biotek_cmd_rx_init(biotek_cmd_rx_t *rx)
{
    rx->cur = NULL;
    rx->cmd.param_len = 0;
    rx->overflow = 0;
}

static int cmd_complete(biotek_cmd_rx_t *rx, biotek_cmd_cb cb, void *ud)
{
    rx->cmd.param[rx->cmd.param_len] = '\0';
    int stop = cb(ud, &rx->cmd, 1, LAB_OK);
    rx->cur = NULL;
    rx->cmd.param_len = 0;
    return stop;
}

size_t biotek_cmd_rx_feed(biotek_cmd_rx_t *rx, const uint8_t *data, size_t n, biotek_cmd_cb cb,
                          void *ud)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = data[i];
        if (!rx->cur) {
            const biotek_cmd_info_t *info = biotek_cmd_info((char)c);
            rx->cmd.letter = (char)c;
            rx->cmd.param_len = 0;
            rx->cmd.param[0] = '\0';
            if (!info) {
                if (cb(ud, &rx->cmd, 0, LAB_EUNKNOWN))
                    return i + 1;
                continue;
            }
            rx->cur = info;
            if (info->param == BIOTEK_PARAM_NONE) {
                if (cmd_complete(rx, cb, ud))
                    return i + 1;
            } else if (cb(ud, &rx->cmd, 0, LAB_OK)) {
                return i + 1;
            }
            continue;
        }
        if (rx->cur->param == BIOTEK_PARAM_ETX && c == BIOTEK_ETX) {
            if (rx->overflow) {
                rx->overflow = 0;
                rx->cur = NULL;
                continue;
            }
            if (cmd_complete(rx, cb, ud))
                return i + 1;
            continue;
        }
        if (rx->overflow)
            continue;
        if (rx->cmd.param_len == BIOTEK_FRAME_MAX) {
            rx->overflow = 1;
            if (cb(ud, &rx->cmd, 1, LAB_ETOOLONG))
                return i + 1;
            continue;
        }
        rx->cmd.param[rx->cmd.param_len++] = (char)c;
        if (rx->cur->param == BIOTEK_PARAM_FIXED && rx->cmd.param_len == (size_t)rx->cur->len) {
            if (cmd_complete(rx, cb, ud))
                return i + 1;
        }
    }
    return n;
}
