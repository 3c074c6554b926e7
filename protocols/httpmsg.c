/* HTTP/1.1 messages (protocols/httpmsg.h), by RFC 9112: the head is gathered whole (bounded)
 * before it is parsed, so a field split over two reads is never half-seen; the body is copied
 * into a buffer that grows up to body_max. Line ends are CRLF; a bare LF is taken too (RFC 9112
 * section 2.2 allows it), a bare CR is not. */
#include "protocols/httpmsg.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void httpmsg_msg_init(httpmsg_msg_t *m, bool request, size_t body_max)
{
    memset(m, 0, sizeof *m);
    m->request = request;
    m->body_max = body_max;
    httpmsg_msg_reset(m);
}

void httpmsg_msg_reset(httpmsg_msg_t *m)
{
    char *body = m->body;
    size_t cap = m->body_cap;
    bool request = m->request;
    size_t body_max = m->body_max;
    memset(m, 0, offsetof(httpmsg_msg_t, head));
    m->head_len = m->left = m->line_len = m->trailer_len = 0;
    m->body = body;
    m->body_cap = cap;
    m->request = request;
    m->body_max = body_max;
    m->content_length = -1;
    m->reason = m->method = m->target = "";
    if (m->body)
        m->body[0] = '\0';
}

void httpmsg_msg_free(httpmsg_msg_t *m)
{
    free(m->body);
    m->body = NULL;
    m->body_cap = 0;
}

static int msg_fail(httpmsg_msg_t *m, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int msg_fail(httpmsg_msg_t *m, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->why, sizeof m->why, fmt, ap);
    va_end(ap);
    m->state = HTTPMSG_FAILED;
    return code;
}

const char *httpmsg_msg_field(const httpmsg_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_fields; i++)
        if (strcasecmp(m->fields[i].name, name) == 0)
            return m->fields[i].value;
    return NULL;
}

/* RFC 9110 section 5.6.2: token characters. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value's bytes: VCHAR, SP, HTAB, obs-text. */
static bool is_vbyte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Whether a comma-separated field value holds the token (Connection: keep-alive, close). */
static bool list_has(const char *value, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == n && strncasecmp(p, token, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static int body_reserve(httpmsg_msg_t *m, size_t want)
{
    if (want + 1 <= m->body_cap)
        return LAB_OK;
    size_t cap = m->body_cap ? m->body_cap : 1024;
    while (cap < want + 1)
        cap *= 2;
    char *b = realloc(m->body, cap);
    if (!b)
        return msg_fail(m, LAB_ENOMEM, "no memory for a body of %zu bytes", want);
    m->body = b;
    m->body_cap = cap;
    return LAB_OK;
}

static int body_append(httpmsg_msg_t *m, const uint8_t *p, size_t n)
{
    if (n > m->body_max - m->body_len)
        return msg_fail(m, LAB_ETOOLONG, "body longer than %zu bytes", m->body_max);
    int rc = body_reserve(m, m->body_len + n);
    if (rc < 0)
        return rc;
    memcpy(m->body + m->body_len, p, n);
    m->body_len += n;
    m->body[m->body_len] = '\0';
    return LAB_OK;
}

/* Splits the next line of the head at *pos (NUL at its end, CR stripped); NULL at the end. */
static char *head_line(httpmsg_msg_t *m, size_t *pos)
{
    if (*pos >= m->head_len)
        return NULL;
    char *s = m->head + *pos, *nl = memchr(s, '\n', m->head_len - *pos);
    if (!nl)
        return NULL;
    *nl = '\0';
    if (nl > s && nl[-1] == '\r')
        nl[-1] = '\0';
    *pos = (size_t)(nl - m->head) + 1;
    return s;
}

static int parse_version(httpmsg_msg_t *m, const char *v)
{
    if (strncmp(v, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)v[7]) || v[8])
        return msg_fail(m, LAB_ESYNTAX, "not HTTP/1.x: '%.20s'", v);
    m->minor = v[7] - '0';
    return LAB_OK;
}

static int parse_start(httpmsg_msg_t *m, char *line)
{
    char *sp1 = strchr(line, ' ');
    if (!sp1)
        return msg_fail(m, LAB_ESYNTAX, "start line without a space: '%.40s'", line);
    *sp1 = '\0';
    if (!m->request) {
        int rc = parse_version(m, line);
        if (rc < 0)
            return rc;
        char *code = sp1 + 1;
        if (!isdigit((unsigned char)code[0]) || !isdigit((unsigned char)code[1]) ||
            !isdigit((unsigned char)code[2]) || (code[3] && code[3] != ' ') || code[0] == '0')
            return msg_fail(m, LAB_ESYNTAX, "status is not three digits: '%.20s'", code);
        m->status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
        m->reason = code[3] ? code + 4 : "";
        for (const char *p = m->reason; *p; p++)
            if (!is_vbyte((unsigned char)*p))
                return msg_fail(m, LAB_ESYNTAX, "control byte 0x%02x in the reason phrase",
                                (unsigned char)*p);
        return LAB_OK;
    }
    char *sp2 = strchr(sp1 + 1, ' ');
    if (!sp2 || !*line)
        return msg_fail(m, LAB_ESYNTAX, "request line is not METHOD TARGET VERSION");
    *sp2 = '\0';
    for (const char *p = line; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return msg_fail(m, LAB_ESYNTAX, "method has byte 0x%02x", (unsigned char)*p);
    m->method = line;
    m->target = sp1 + 1;
    size_t tl = strlen(m->target);
    if (tl == 0 || tl > HTTPMSG_TARGET_MAX)
        return msg_fail(m, LAB_ESYNTAX, "request target of %zu bytes", tl);
    for (const char *p = m->target; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return msg_fail(m, LAB_ESYNTAX, "request target has byte 0x%02x", (unsigned char)*p);
    return parse_version(m, sp2 + 1);
}

static int parse_length(httpmsg_msg_t *m, const char *v)
{
    if (!*v)
        return msg_fail(m, LAB_ESYNTAX, "empty Content-Length");
    unsigned long long n = 0;
    for (const char *p = v; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return msg_fail(m, LAB_ESYNTAX, "Content-Length '%.20s' is not a number", v);
        if (n > (unsigned long long)m->body_max)
            break;
        n = n * 10 + (unsigned)(*p - '0');
    }
    if (n > (unsigned long long)m->body_max)
        return msg_fail(m, LAB_ETOOLONG, "Content-Length %.20s is over %zu bytes", v, m->body_max);
    if (m->content_length >= 0 && (unsigned long long)m->content_length != n)
        return msg_fail(m, LAB_ESYNTAX, "two different Content-Length fields");
    m->content_length = (long long)n;
    return LAB_OK;
}

static int parse_field(httpmsg_msg_t *m, char *line)
{
    if (*line == ' ' || *line == '\t')
        return msg_fail(m, LAB_ESYNTAX, "obsolete line folding");
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return msg_fail(m, LAB_ESYNTAX, "field without a name: '%.40s'", line);
    *colon = '\0';
    for (const char *p = line; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return msg_fail(m, LAB_ESYNTAX, "field name has byte 0x%02x", (unsigned char)*p);
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        v[--vl] = '\0';
    for (size_t i = 0; i < vl; i++)
        if (!is_vbyte((unsigned char)v[i]))
            return msg_fail(m, LAB_ESYNTAX, "field %.40s has byte 0x%02x", line,
                            (unsigned char)v[i]);
    if (m->n_fields == HTTPMSG_FIELDS_MAX)
        return msg_fail(m, LAB_ETOOLONG, "more than %d header fields", HTTPMSG_FIELDS_MAX);
    m->fields[m->n_fields].name = line;
    m->fields[m->n_fields].value = v;
    m->n_fields++;
    if (strcasecmp(line, "Content-Length") == 0)
        return parse_length(m, v);
    if (strcasecmp(line, "Transfer-Encoding") == 0) {
        if (strcasecmp(v, "chunked") != 0)
            return msg_fail(m, LAB_ESYNTAX, "transfer coding '%.40s' (only chunked is read)", v);
        m->chunked = true;
    }
    return LAB_OK;
}

/* The whole head is in m->head: its lines, then how the body is delimited. */
static int parse_head(httpmsg_msg_t *m)
{
    size_t pos = 0;
    char *line = head_line(m, &pos);
    if (!line)
        return msg_fail(m, LAB_ESYNTAX, "no start line");
    for (char *p = line; *p; p++)
        if (*p == '\r')
            return msg_fail(m, LAB_ESYNTAX, "bare CR in the start line");
    int rc = parse_start(m, line);
    if (rc < 0)
        return rc;
    while ((line = head_line(m, &pos)) && *line) {
        rc = parse_field(m, line);
        if (rc < 0)
            return rc;
    }
    if (m->chunked && m->content_length >= 0)
        return msg_fail(m, LAB_ESYNTAX, "both Content-Length and Transfer-Encoding");
    const char *conn = httpmsg_msg_field(m, "Connection");
    m->keep_alive =
        m->minor >= 1 ? !(conn && list_has(conn, "close")) : (conn && list_has(conn, "keep-alive"));
    int rc2 = body_reserve(m, 0);
    if (rc2 < 0)
        return rc2;
    m->body[0] = '\0';
    bool no_body = !m->request && (m->status < 200 || m->status == 204 || m->status == 304);
    if (no_body || (m->request && !m->chunked && m->content_length < 0)) {
        m->state = HTTPMSG_DONE;
    } else if (m->chunked) {
        m->state = HTTPMSG_CHUNK_SIZE;
    } else if (m->content_length >= 0) {
        m->left = (unsigned long long)m->content_length;
        m->state = m->left ? HTTPMSG_BODY_LENGTH : HTTPMSG_DONE;
    } else {
        m->state = HTTPMSG_BODY_CLOSE; /* RFC 9112 section 6.3, rule 8 */
        m->keep_alive = false;
    }
    return LAB_OK;
}

/* Gathers the head up to its empty line; the bytes after it are left for the body. */
static int feed_head(httpmsg_msg_t *m, const uint8_t *p, size_t n, size_t *used)
{
    size_t i = 0;
    for (; i < n; i++) {
        if (m->head_len == HTTPMSG_HEAD_MAX)
            return msg_fail(m, LAB_ETOOLONG, "head longer than %d bytes", HTTPMSG_HEAD_MAX);
        /* Empty lines before a message are skipped (RFC 9112 section 2.2). */
        if (m->head_len == 0 && (p[i] == '\r' || p[i] == '\n'))
            continue;
        if (p[i] == '\0') /* it would end the C string a field is read as */
            return msg_fail(m, LAB_ESYNTAX, "NUL byte in the head at %zu", m->head_len);
        m->head[m->head_len++] = (char)p[i];
        m->head[m->head_len] = '\0';
        if (p[i] != '\n')
            continue;
        size_t h = m->head_len;
        if ((h >= 2 && m->head[h - 2] == '\n') ||
            (h >= 3 && m->head[h - 2] == '\r' && m->head[h - 3] == '\n')) {
            *used = i + 1;
            return parse_head(m);
        }
    }
    *used = n;
    return LAB_EAGAIN;
}

static int chunk_size_line(httpmsg_msg_t *m)
{
    char *l = m->line;
    size_t n = m->line_len;
    if (n && l[n - 1] == '\r')
        l[--n] = '\0';
    unsigned long long size = 0;
    size_t i = 0;
    for (; i < n && isxdigit((unsigned char)l[i]); i++) {
        if (size > (unsigned long long)m->body_max)
            return msg_fail(m, LAB_ETOOLONG, "chunk of more than %zu bytes", m->body_max);
        char c = (char)tolower((unsigned char)l[i]);
        size = size * 16 + (unsigned)(isdigit((unsigned char)c) ? c - '0' : c - 'a' + 10);
    }
    if (i == 0 || (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
        return msg_fail(m, LAB_ESYNTAX, "chunk size '%.20s' is not hexadecimal", l);
    for (size_t k = i; k < n; k++)
        if (!is_vbyte((unsigned char)l[k]))
            return msg_fail(m, LAB_ESYNTAX, "chunk extension has byte 0x%02x", (unsigned char)l[k]);
    if (size > (unsigned long long)(m->body_max - m->body_len))
        return msg_fail(m, LAB_ETOOLONG, "body longer than %zu bytes", m->body_max);
    m->left = size;
    m->line_len = 0;
    m->state = size ? HTTPMSG_CHUNK_DATA : HTTPMSG_TRAILER;
    return LAB_OK;
}

int httpmsg_msg_feed(httpmsg_msg_t *m, const uint8_t *data, size_t len, size_t *used)
{
    size_t i = 0, u = 0;
    int rc;
    *used = 0;
    if (m->state == HTTPMSG_FAILED)
        return LAB_ESYNTAX;
    if (m->state == HTTPMSG_DONE)
        return LAB_OK;
    if (m->state == HTTPMSG_HEAD) {
        rc = feed_head(m, data, len, &u);
        i = u;
        if (rc < 0 || rc == LAB_EAGAIN) {
            *used = i;
            return rc;
        }
    }
    while (m->state != HTTPMSG_DONE && i < len) {
        size_t take;
        switch (m->state) {
        case HTTPMSG_BODY_LENGTH:
        case HTTPMSG_CHUNK_DATA:
            take = len - i < m->left ? len - i : (size_t)m->left;
            if ((rc = body_append(m, data + i, take)) < 0)
                return rc;
            i += take;
            m->left -= take;
            if (!m->left)
                m->state = m->state == HTTPMSG_BODY_LENGTH ? HTTPMSG_DONE : HTTPMSG_CHUNK_END;
            break;
        case HTTPMSG_BODY_CLOSE:
            if ((rc = body_append(m, data + i, len - i)) < 0)
                return rc;
            i = len;
            break;
        case HTTPMSG_CHUNK_END:
            if (data[i] == '\r' && m->line_len == 0) {
                m->line_len = 1;
                i++;
            } else if (data[i] == '\n') {
                m->line_len = 0;
                m->state = HTTPMSG_CHUNK_SIZE;
                i++;
            } else {
                return msg_fail(m, LAB_ESYNTAX, "byte 0x%02x after chunk data, not CRLF", data[i]);
            }
            break;
        case HTTPMSG_CHUNK_SIZE:
            if (data[i] == '\n') {
                m->line[m->line_len] = '\0';
                i++;
                if ((rc = chunk_size_line(m)) < 0)
                    return rc;
                break;
            }
            if (m->line_len >= sizeof m->line - 1)
                return msg_fail(m, LAB_ETOOLONG, "chunk-size line longer than %zu bytes",
                                sizeof m->line - 1);
            if (data[i] == '\0')
                return msg_fail(m, LAB_ESYNTAX, "byte 0x%02x in a chunk-size line", data[i]);
            m->line[m->line_len++] = (char)data[i++];
            break;
        case HTTPMSG_TRAILER:
            /* Trailer fields are read and dropped: an empty line ends the message. line_len
             * counts the current line's bytes, its CR aside. */
            if (++m->trailer_len > HTTPMSG_HEAD_MAX)
                return msg_fail(m, LAB_ETOOLONG, "trailer longer than %d bytes", HTTPMSG_HEAD_MAX);
            if (data[i] == '\n') {
                if (m->line_len == 0)
                    m->state = HTTPMSG_DONE;
                m->line_len = 0;
            } else if (data[i] != '\r') {
                if (!is_vbyte(data[i]))
                    return msg_fail(m, LAB_ESYNTAX, "byte 0x%02x in a trailer field", data[i]);
                m->line_len++;
            }
            i++;
            break;
        default:
            return msg_fail(m, LAB_ESYNTAX, "parser in state %d", (int)m->state);
        }
    }
    *used = i;
    return m->state == HTTPMSG_DONE ? LAB_OK : LAB_EAGAIN;
}

int httpmsg_msg_eof(httpmsg_msg_t *m)
{
    switch (m->state) {
    case HTTPMSG_DONE:
        return LAB_OK;
    case HTTPMSG_BODY_CLOSE:
        m->state = HTTPMSG_DONE;
        return LAB_OK;
    case HTTPMSG_HEAD:
        if (m->head_len == 0)
            return LAB_EAGAIN;
        return msg_fail(m, LAB_ESYNTAX, "connection closed inside the head (%zu bytes)",
                        m->head_len);
    case HTTPMSG_FAILED:
        return LAB_ESYNTAX;
    default:
        return msg_fail(m, LAB_ESYNTAX, "connection closed inside the body (%zu bytes read)",
                        m->body_len);
    }
}

/* ---- encoders ---- */

static bool token_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool value_ok(const char *s)
{
    if (!s)
        return false;
    for (; *s; s++)
        if (!is_vbyte((unsigned char)*s))
            return false;
    return true;
}

/* Strings go in with proto_out_mem: proto_out_fmt formats through a small buffer, and a target
 * or a field value may be longer. */
static void put(proto_out_t *o, const char *a, const char *b, const char *c)
{
    proto_out_mem(o, a, strlen(a));
    proto_out_mem(o, b, strlen(b));
    proto_out_mem(o, c, strlen(c));
}

static int put_fields(proto_out_t *o, const httpmsg_kv_t *fields, size_t n, const char *body,
                      size_t body_len)
{
    for (size_t i = 0; i < n; i++) {
        if (!token_ok(fields[i].name) || !value_ok(fields[i].value))
            return LAB_EINVAL;
        put(o, fields[i].name, ": ", fields[i].value);
        put(o, "\r\n", "", "");
    }
    if (body) {
        proto_out_fmt(o, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", body_len);
        proto_out_mem(o, body, body_len);
    } else {
        proto_out_fmt(o, "\r\n");
    }
    return LAB_OK;
}

int httpmsg_request(char *buf, size_t cap, const char *method, const char *target, const char *host,
                    const httpmsg_kv_t *fields, size_t n, const char *body, size_t body_len)
{
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    if (!token_ok(method) || !target || !*target || strlen(target) > HTTPMSG_TARGET_MAX ||
        !value_ok(host) || !*host)
        return LAB_EINVAL;
    for (const char *p = target; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return LAB_EINVAL;
    put(&o, method, " ", target);
    put(&o, " HTTP/1.1\r\nHost: ", host, "\r\n");
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        if (!body)
            body = "", body_len = 0;
    }
    int rc = put_fields(&o, fields, n, body, body_len);
    return rc < 0 ? rc : proto_out_result(&o);
}

int httpmsg_response(char *buf, size_t cap, int status, const char *reason,
                     const httpmsg_kv_t *fields, size_t n, const char *body, size_t body_len,
                     bool close)
{
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    if (status < 100 || status > 999 || !value_ok(reason))
        return LAB_EINVAL;
    proto_out_fmt(&o, "HTTP/1.1 %d ", status);
    put(&o, reason, "\r\n", "");
    if (close)
        proto_out_fmt(&o, "Connection: close\r\n");
    if (!body)
        proto_out_fmt(&o, "Content-Length: 0\r\n");
    int rc = put_fields(&o, fields, n, body, body_len);
    return rc < 0 ? rc : proto_out_result(&o);
}
