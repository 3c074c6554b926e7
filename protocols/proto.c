/* The line framer and the bounded output buffer of the wire codecs. */
#include "protocols/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void proto_lines_init(proto_lines_t *lb)
{
    lb->len = 0;
    lb->overflow = 0;
    lb->buf[0] = '\0';
}

size_t proto_lines_feed(proto_lines_t *lb, const uint8_t *data, size_t n, proto_line_cb cb,
                        void *ud)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = data[i];
        if (c == '\r' || c == '\n') {
            int stop = 0;
            if (lb->overflow) {
                lb->overflow = 0;
            } else if (lb->len > 0) {
                lb->buf[lb->len] = '\0';
                stop = cb(ud, lb->buf, lb->len, LAB_OK);
            }
            lb->len = 0;
            if (stop)
                return i + 1;
            continue;
        }
        if (lb->overflow)
            continue;
        if (lb->len == PROTO_LINE_MAX) {
            lb->overflow = 1;
            lb->len = 0;
            if (cb(ud, NULL, 0, LAB_ETOOLONG))
                return i + 1;
            continue;
        }
        lb->buf[lb->len++] = (char)c;
    }
    return n;
}

void proto_out_init(proto_out_t *o, char *buf, size_t cap)
{
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->err = 0;
    if (cap > 0)
        buf[0] = '\0';
}

void proto_out_mem(proto_out_t *o, const void *p, size_t n)
{
    if (o->err)
        return;
    if (o->cap == 0 || n > o->cap - 1 - o->len) {
        o->err = LAB_ENOSPACE;
        return;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

void proto_out_fmt(proto_out_t *o, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        if (!o->err)
            o->err = LAB_ENOSPACE;
        return;
    }
    proto_out_mem(o, tmp, (size_t)n);
}

int proto_out_result(const proto_out_t *o)
{
    return o->err ? o->err : (int)o->len;
}
