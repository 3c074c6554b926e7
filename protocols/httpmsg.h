/* A small HTTP/1.1 codec (RFC 9112) without I/O, for instruments that speak HTTP (the Opentrons
 * robot-server) and for labloop-sim's side of them: a request and a response encoder, and one
 * incremental message parser for either direction (status line or request line, header fields,
 * a body delimited by Content-Length, by chunked transfer coding, or, for a response, by the
 * close of the connection). Everything it reads is bounded: the head (start line and fields)
 * by HTTPMSG_HEAD_MAX, the body by the limit the caller gives. What it refuses it names in why:
 * obsolete line folding, both Content-Length and Transfer-Encoding (request smuggling), a
 * transfer coding other than chunked, control bytes in a field. */
#ifndef LAB_PROTO_HTTPMSG_H
#define LAB_PROTO_HTTPMSG_H

#include "protocols/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPMSG_HEAD_MAX 8192   /* start line + header fields + the empty line */
#define HTTPMSG_FIELDS_MAX 48   /* header fields kept; more is LAB_ETOOLONG */
#define HTTPMSG_TARGET_MAX 1024 /* a request target */

typedef struct httpmsg_field {
    const char *name, *value; /* NUL-terminated, inside the message's head */
} httpmsg_field_t;

typedef enum httpmsg_state {
    HTTPMSG_HEAD = 0,
    HTTPMSG_BODY_LENGTH, /* Content-Length bytes */
    HTTPMSG_BODY_CLOSE,  /* a response read until the connection closes */
    HTTPMSG_CHUNK_SIZE,  /* a chunk-size line */
    HTTPMSG_CHUNK_DATA,  /* chunk data */
    HTTPMSG_CHUNK_END,   /* the CRLF after chunk data */
    HTTPMSG_TRAILER,     /* trailer fields after the last chunk */
    HTTPMSG_DONE,        /* a complete message; httpmsg_msg_reset for the next */
    HTTPMSG_FAILED,      /* malformed: the connection cannot be used any more */
} httpmsg_state_t;

/* One message being read. Fields are the parser's; read them after LAB_OK. */
typedef struct httpmsg_msg {
    bool request;    /* parse a request line (a server's side), else a status line */
    size_t body_max; /* a longer body is LAB_ETOOLONG */
    httpmsg_state_t state;
    /* the start line */
    int minor; /* HTTP/1.minor */
    int status;
    const char *reason; /* the response's reason phrase (may be "") */
    const char *method, *target;
    /* the fields */
    httpmsg_field_t fields[HTTPMSG_FIELDS_MAX];
    size_t n_fields;
    long long content_length; /* -1 when the message has none */
    bool chunked;
    bool keep_alive; /* the connection may carry another message after this one */
    /* the body (NUL-terminated; body_len excludes it) */
    char *body;
    size_t body_len, body_cap;
    char why[160]; /* what was wrong, after an error */
    /* parser state */
    char head[HTTPMSG_HEAD_MAX + 1];
    size_t head_len;
    unsigned long long left; /* body or chunk bytes still to come */
    char line[80];           /* a chunk-size line */
    size_t line_len;
    size_t trailer_len;
} httpmsg_msg_t;

/* request: parse requests (a server), else responses (a client). body_max: the largest body. */
void httpmsg_msg_init(httpmsg_msg_t *m, bool request, size_t body_max);
/* Ready for the next message on the same connection (the body buffer is kept). */
void httpmsg_msg_reset(httpmsg_msg_t *m);
void httpmsg_msg_free(httpmsg_msg_t *m);

/* Takes bytes; *used says how many belong to this message (the rest start the next one).
 * LAB_OK: the message is complete. LAB_EAGAIN: more bytes are needed. LAB_ESYNTAX: malformed,
 * LAB_ETOOLONG: over a limit, LAB_ENOMEM: no memory for the body; why says what, and the
 * message stays failed until reset. A 1xx, 204 or 304 response has no body. */
int httpmsg_msg_feed(httpmsg_msg_t *m, const uint8_t *data, size_t len, size_t *used);
/* The connection closed: LAB_OK when that completes the message (a response body read until
 * the close), LAB_EAGAIN when no byte of a message came, LAB_ESYNTAX (why) when one was cut. */
int httpmsg_msg_eof(httpmsg_msg_t *m);
/* The value of the first field of that name (case-insensitive), or NULL. */
const char *httpmsg_msg_field(const httpmsg_msg_t *m, const char *name);

/* A header field to send. */
typedef struct httpmsg_kv {
    const char *name, *value;
} httpmsg_kv_t;

/* "METHOD TARGET HTTP/1.1", Host, the fields given, and Content-Length (and Content-Type
 * application/json) when body is not NULL. The length written (NUL-terminated, not counted),
 * LAB_EINVAL for a method, target, host or field with a byte HTTP does not allow there (a CR or
 * LF would smuggle a field), or LAB_ENOSPACE. */
int httpmsg_request(char *buf, size_t cap, const char *method, const char *target, const char *host,
                    const httpmsg_kv_t *fields, size_t n, const char *body, size_t body_len);
/* "HTTP/1.1 STATUS REASON", the fields given, Content-Length and (with a body) Content-Type
 * application/json, Connection: close when close. Same results as httpmsg_request. */
int httpmsg_response(char *buf, size_t cap, int status, const char *reason,
                     const httpmsg_kv_t *fields, size_t n, const char *body, size_t body_len,
                     bool close);

#endif
