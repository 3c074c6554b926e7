/* SpectraMax codec. Sources are listed in spectramax.h. */
#include "protocols/spectramax.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* backend.py COMMAND_TERMINATORS (lines 17-63): the '>'-ended fields of each command's reply.
 * Its "OPTION" row lacks the '!' the command is sent with, so !OPTION takes the default 1 there
 * too. */
static const struct {
    const char *word;
    int fields;
} reply_fields[] = {
    {"!AUTOFILTER", 1},   {"!AUTOPMT", 1},   {"!BAUD", 1},         {"!CALIBRATE", 1},
    {"!CANCEL", 1},       {"!CLEAR", 1},     {"!CLOSE", 1},        {"!CSPEED", 1},
    {"!REFERENCE", 1},    {"!EMFILTER", 1},  {"!EMWAVELENGTH", 1}, {"!ERROR", 2},
    {"!EXWAVELENGTH", 1}, {"!FPW", 1},       {"!INIT", 1},         {"!MODE", 1},
    {"!NVRAM", 1},        {"!OPEN", 1},      {"!ORDER", 1},        {"!AIR_CAL", 1},
    {"!PMT", 1},          {"!PMTCAL", 1},    {"!QUEUE", 2},        {"!READ", 1},
    {"!TOP", 1},          {"!READSTAGE", 2}, {"!READTYPE", 2},     {"!RESEND", 1},
    {"!RESET", 1},        {"!SHAKE", 1},     {"!SPEED", 2},        {"!STATUS", 2},
    {"!STRIP", 1},        {"!TAG", 1},       {"!TEMP", 2},         {"!TRANSFER", 2},
    {"!USER_NUMBER", 2},  {"!XPOS", 1},      {"!YPOS", 1},         {"!WAVELENGTH", 1},
    {"!WELLSCANMODE", 2}, {"!PATHCAL", 2},   {"!COUNTTIME", 1},    {"!COUNTTIMEDELAY", 1},
};

int smax_reply_fields(const char *cmd, size_t len)
{
    size_t w = 0;
    while (w < len && cmd[w] != ' ' && cmd[w] != '\r')
        w++;
    if (w == 0 || cmd[0] != '!')
        return 0;
    for (size_t i = 0; i < sizeof reply_fields / sizeof reply_fields[0]; i++)
        if (strlen(reply_fields[i].word) == w && memcmp(reply_fields[i].word, cmd, w) == 0)
            return reply_fields[i].fields;
    return 1;
}

int smax_encode_cmd(char *buf, size_t cap, const char *fmt, ...)
{
    char text[SMAX_CMD_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof text)
        return LAB_ENOSPACE;
    for (int i = 0; i < n; i++)
        if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] > 0x7e || text[i] == SMAX_TERM)
            return LAB_ESYNTAX;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_mem(&o, text, (size_t)n);
    proto_out_mem(&o, "\r", 1);
    return proto_out_result(&o);
}

/* ---- reply fields ---- */

void smax_rx_init(smax_rx_t *rx)
{
    rx->len = 0;
    rx->skip = 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

size_t smax_rx_feed(smax_rx_t *rx, const uint8_t *data, size_t n, smax_field_cb cb, void *ud)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = data[i];
        if (c == SMAX_TERM) {
            if (rx->skip) {
                rx->skip = 0;
                rx->len = 0;
                continue;
            }
            size_t a = 0, b = rx->len;
            while (a < b && is_space(rx->buf[a]))
                a++;
            while (b > a && is_space(rx->buf[b - 1]))
                b--;
            rx->buf[b] = '\0';
            rx->len = 0;
            if (cb(ud, rx->buf + a, b - a, LAB_OK))
                return i + 1;
            continue;
        }
        if (rx->skip)
            continue;
        if ((c < 0x20 && !is_space((char)c)) || c > 0x7e) {
            rx->skip = 1;
            if (cb(ud, NULL, 0, LAB_EGARBAGE))
                return i + 1;
            continue;
        }
        /* Line ends between fields belong to no field: nothing waits for them. */
        if (rx->len == 0 && is_space((char)c))
            continue;
        if (rx->len == SMAX_FIELD_MAX) {
            rx->skip = 1;
            if (cb(ud, NULL, 0, LAB_ETOOLONG))
                return i + 1;
            continue;
        }
        rx->buf[rx->len++] = (char)c;
    }
    return n;
}

static const char *find(const char *s, size_t len, const char *what)
{
    size_t w = strlen(what);
    for (size_t i = 0; i + w <= len; i++)
        if (memcmp(s + i, what, w) == 0)
            return s + i;
    return NULL;
}

/* An integer of digits only (an optional sign), at most 9 of them. */
static int parse_int(const char *s, size_t n, int *out)
{
    size_t i = s[0] == '-' || s[0] == '+';
    if (n <= i || n - i > 9)
        return LAB_ESYNTAX;
    int v = 0;
    for (size_t k = i; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return LAB_ESYNTAX;
        v = v * 10 + (s[k] - '0');
    }
    *out = s[0] == '-' ? -v : v;
    return LAB_OK;
}

int smax_field_kind(const char *field, size_t len, int *code)
{
    /* backend.py 303-319: a field holding FAIL carries the code after its last TAB. */
    if (find(field, len, "FAIL")) {
        const char *p = field + len;
        while (p > field && p[-1] != '\t')
            p--;
        const char *e = field + len;
        while (p < e && *p == ' ')
            p++;
        while (e > p && is_space(e[-1]))
            e--;
        if (p == field || parse_int(p, (size_t)(e - p), code) != LAB_OK)
            return LAB_ESYNTAX;
        return SMAX_FAIL;
    }
    return len >= 2 && memcmp(field, "OK", 2) == 0 ? SMAX_OK : SMAX_DATA;
}

static const struct {
    int code;
    const char *text;
} errors[] = {
    {100, "command not found"},
    {101, "invalid argument"},
    {102, "too many arguments"},
    {103, "not enough arguments"},
    {104, "input line too long"},
    {105, "command invalid, system busy"},
    {106, "command invalid, measurement in progress"},
    {107, "no data to transfer"},
    {108, "data buffer full"},
    {109, "error buffer overflow"},
    {110, "stray light cuvette, door open?"},
    {111, "invalid read settings"},
    {200, "assert failed"},
    {201, "bad error number"},
    {202, "receive queue overflow"},
    {203, "serial port parity error"},
    {204, "serial port overrun error"},
    {205, "serial port framing error"},
    {206, "cmd generated too much output"},
    {207, "fatal trap"},
    {208, "RTOS error"},
    {209, "stack overflow"},
    {210, "unknown interrupt"},
    {300, "thermistor faulty"},
    {301, "safe temperature limit exceeded"},
    {302, "low light"},
    {303, "unable to cal dark current"},
    {304, "signal level saturation"},
    {305, "reference level saturation"},
    {306, "plate air cal fail, low light"},
    {307, "cuv air ref fail"},
    {308, "stray light"},
    {312, "gain calibration failed"},
    {313, "reference gain check fail"},
    {314, "low lamp level warning"},
    {315, "can't find zero order"},
    {316, "grating motor driver faulty"},
    {317, "monitor ADC faulty"},
    {400, "carriage motion error"},
    {401, "filter wheel error"},
    {402, "grating error"},
    {403, "stage error"},
    {500, "NVRAM CRC corrupt"},
    {501, "NVRAM Grating cal data bad"},
    {502, "NVRAM Cuvette air cal data error"},
    {503, "NVRAM Plate air cal data error"},
    {504, "NVRAM Carriage offset error"},
    {505, "NVRAM Stage offset error"},
};

const char *smax_error_text(int code, const char **cls)
{
    /* The hundreds are the classes of backend.py's exceptions (lines 70-87). */
    static const char *const classes[] = {"command", "firmware", "hardware", "motion", "NVRAM"};
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) {
            if (cls)
                *cls = classes[code / 100 - 1];
            return errors[i].text;
        }
    return NULL;
}

/* The next word (no blanks) of [*p, end). */
static int word(const char **p, const char *end, const char **w, size_t *wl)
{
    while (*p < end && is_space(**p))
        (*p)++;
    *w = *p;
    while (*p < end && !is_space(**p))
        (*p)++;
    *wl = (size_t)(*p - *w);
    return *wl > 0;
}

int smax_parse_status(const char *field, size_t len, char *state, size_t cap)
{
    const char *p = field, *end = field + len, *w;
    size_t wl;
    if (!word(&p, end, &w, &wl) || !word(&p, end, &w, &wl))
        return LAB_ESYNTAX;
    if (wl + 1 > cap)
        return LAB_ENOSPACE;
    memcpy(state, w, wl);
    state[wl] = '\0';
    return LAB_OK;
}

/* A decimal number as the reader prints it: digits with at most one '.', an optional '-'. */
static int parse_num(const char *s, size_t n, double *v)
{
    char tmp[32];
    size_t dots = 0, digits = 0;
    if (n == 0 || n >= sizeof tmp)
        return LAB_ESYNTAX;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.')
            dots++;
        else if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else if (!(i == 0 && s[i] == '-'))
            return LAB_ESYNTAX;
    }
    if (dots > 1 || digits == 0)
        return LAB_ESYNTAX;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *v = strtod(tmp, NULL);
    return isfinite(*v) ? LAB_OK : LAB_ESYNTAX;
}

int smax_parse_temp(const char *field, size_t len, double *setpoint, double *current)
{
    const char *p = field, *end = field + len, *w;
    size_t wl;
    if (!word(&p, end, &w, &wl) || parse_num(w, wl, setpoint) != LAB_OK)
        return LAB_ESYNTAX;
    if (!word(&p, end, &w, &wl) || parse_num(w, wl, current) != LAB_OK)
        return LAB_ESYNTAX;
    return LAB_OK;
}

/* ---- absorbance data ---- */

/* The next line of [*p, end) without its ends' blanks; empty lines skipped. */
static int next_line(const char **p, const char *end, const char **line, size_t *ll)
{
    for (;;) {
        if (*p >= end)
            return 0;
        const char *s = *p;
        while (*p < end && **p != '\n' && **p != '\r')
            (*p)++;
        const char *e = *p;
        if (*p < end)
            (*p)++;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (e > s) {
            *line = s;
            *ll = (size_t)(e - s);
            return 1;
        }
    }
}

static int fail_at(smax_plate_t *out, const char *data, const char *at)
{
    out->err_at = (size_t)(at - data);
    return LAB_ESYNTAX;
}

int smax_parse_data(const char *data, size_t len, int rows, int cols, smax_plate_t *out)
{
    if (rows < 1 || rows > SMAX_ROWS_MAX || cols < 1 || cols > SMAX_COLS_MAX)
        return LAB_ERANGE;
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)data[i] < 0x20 && !is_space(data[i])) || (unsigned char)data[i] > 0x7e)
            return fail_at(out, data, data + i);
    const char *p = data, *end = data + len, *line, *w;
    size_t ll, wl;
    /* 1. The header: time TAB temperature (TAB plate). */
    if (!next_line(&p, end, &line, &ll))
        return fail_at(out, data, end);
    const char *q = line, *le = line + ll;
    if (!word(&q, le, &w, &wl) || parse_num(w, wl, &out->time))
        return fail_at(out, data, line);
    if (!word(&q, le, &w, &wl) || parse_num(w, wl, &out->temperature))
        return fail_at(out, data, w);
    /* 2. Wavelength lines ("L:" ...) up to the first data line; the last one names the block. */
    int n_l = 0, col = 0;
    while (next_line(&p, end, &line, &ll)) {
        q = line, le = line + ll;
        if (ll >= 2 && memcmp(line, "L:", 2) == 0) {
            if (col > 0) /* a second block: more than the one wavelength asked for */
                return fail_at(out, data, line);
            q += 2;
            int nm;
            if (!word(&q, le, &w, &wl) || parse_int(w, wl, &nm) || nm <= 0)
                return fail_at(out, data, line);
            out->wavelength_nm = nm;
            n_l++;
            continue;
        }
        /* 3. A column: "N:" then rows values. */
        if (n_l == 0 || !word(&q, le, &w, &wl) || wl < 2 || w[wl - 1] != ':')
            return fail_at(out, data, line);
        int n;
        if (parse_int(w, wl - 1, &n) || n != col + 1 || n > cols)
            return fail_at(out, data, line);
        for (int r = 0; r < rows; r++) {
            if (!word(&q, le, &w, &wl))
                return fail_at(out, data, q);
            double v;
            if (parse_num(w, wl, &v) == LAB_OK) {
                out->value[r][col] = v;
                out->state[r][col] = SMAX_WELL_VALUE;
            } else {
                out->value[r][col] = NAN;
                out->state[r][col] =
                    wl == 4 && memcmp(w, "#SAT", 4) == 0 ? SMAX_WELL_SAT : SMAX_WELL_NOVALUE;
            }
        }
        if (word(&q, le, &w, &wl))
            return fail_at(out, data, w);
        col++;
    }
    if (col != cols)
        return fail_at(out, data, end);
    return LAB_OK;
}

int smax_encode_data(const smax_plate_t *pl, char *buf, size_t cap)
{
    if (pl->rows < 1 || pl->rows > SMAX_ROWS_MAX || pl->cols < 1 || pl->cols > SMAX_COLS_MAX ||
        pl->wavelength_nm <= 0 || !isfinite(pl->time) || !isfinite(pl->temperature))
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "%.1f\t%.1f\t%d-well\r\nL:\t%d\r\nL:\t%d\r\n", pl->time, pl->temperature,
                  pl->rows * pl->cols, pl->wavelength_nm, pl->wavelength_nm);
    for (int c = 0; c < pl->cols; c++) {
        proto_out_fmt(&o, "%d:", c + 1);
        for (int r = 0; r < pl->rows; r++) {
            double v = pl->value[r][c];
            switch (pl->state[r][c]) {
            case SMAX_WELL_VALUE:
                if (!isfinite(v) || fabs(v) >= 1e6)
                    return LAB_ERANGE;
                proto_out_fmt(&o, "\t%.4f", v);
                break;
            case SMAX_WELL_SAT:
                proto_out_mem(&o, "\t#SAT", 5);
                break;
            default:
                proto_out_mem(&o, "\t-", 2);
                break;
            }
        }
        proto_out_mem(&o, "\r\n", 2);
    }
    return proto_out_result(&o);
}

/* ---- commands (simulator side) ---- */

int smax_cmd_parse(const char *line, size_t len, smax_cmd_t *out)
{
    if (len >= sizeof out->line)
        return LAB_ETOOLONG;
    memcpy(out->line, line, len);
    out->line[len] = '\0';
    out->argc = 0;
    char *p = out->line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (!*p)
            break;
        if (out->argc == SMAX_ARGS_MAX)
            return LAB_ESYNTAX;
        out->argv[out->argc++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    if (out->argc == 0 || out->argv[0][0] != '!')
        return LAB_ESYNTAX;
    return LAB_OK;
}
