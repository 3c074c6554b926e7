/* Shared pieces of the wire codecs: the line framer used by the line-oriented protocols (Liconic,
 * STAR on stream transports) and the bounded output buffer. Codecs return core/err.h's codes
 * (LAB_ESYNTAX, LAB_ERANGE, LAB_EAGAIN for a frame not complete yet, ...). No I/O: bytes in, frames
 * out. Everything here is usable by both sides of a link, the driver and the simulator. */
#ifndef LAB_PROTO_H
#define LAB_PROTO_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Line framer: CR, LF or CRLF end a line; empty lines are skipped so CRLF yields one line.
 * A line longer than the capacity is reported once as LAB_ETOOLONG and its bytes are dropped
 * up to the next terminator, so one bad line never poisons the next. */
#define PROTO_LINE_MAX 4096

typedef struct proto_lines {
    char buf[PROTO_LINE_MAX + 1];
    size_t len;
    int overflow;
} proto_lines_t;

/* Called per complete line (err == 0, line NUL-terminated) or per error (line may be NULL).
 * Returning non-zero stops the feed early; proto_lines_feed then returns the bytes consumed. */
typedef int (*proto_line_cb)(void *ud, const char *line, size_t len, int err);

void proto_lines_init(proto_lines_t *lb);
size_t proto_lines_feed(proto_lines_t *lb, const uint8_t *data, size_t n, proto_line_cb cb,
                        void *ud);

/* Bounded append helpers for the encoders: they never write past cap and keep a NUL. */
typedef struct proto_out {
    char *buf;
    size_t cap;
    size_t len;
    int err;
} proto_out_t;

void proto_out_init(proto_out_t *o, char *buf, size_t cap);
void proto_out_mem(proto_out_t *o, const void *p, size_t n);
void proto_out_fmt(proto_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Length written, or the first error (LAB_ENOSPACE). */
int proto_out_result(const proto_out_t *o);

#endif
