/* libFuzzer target: the robot-server's side of the wire as the driver and labloop-sim read it.
 * The first byte picks the direction (even: responses, as the driver reads them; odd: requests,
 * as the simulator reads them) and the size of the chunks the bytes are fed in, so every split
 * inside a head, a chunk-size line or a body is exercised. Each complete message's body goes
 * through the robot-server readers; a complete response is encoded again and must parse back to
 * the same status and body. An abort or a sanitizer report is a finding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/httpmsg.h"
#include "protocols/opentrons.h"

#define BODY_MAX 4096

static void read_body(const httpmsg_msg_t *m, bool request)
{
    char why[160];
    if (request) {
        char type[64];
        json_t *params = NULL;
        if (ot_command_request_parse(m->body, m->body_len, type, sizeof type, &params, why,
                                     sizeof why) == LAB_OK) {
            if (!json_is_object(params) || strlen(type) >= sizeof type)
                abort();
            char *again = ot_command_body(type, params);
            free(again); /* NULL for a type that is not a command name */
        }
        json_decref(params);
        return;
    }
    ot_health_t h;
    if (ot_health_parse(m->body, m->body_len, &h, why, sizeof why) == LAB_OK &&
        !ot_model_name(h.model))
        abort();
    ot_run_t r;
    if (ot_run_parse(m->body, m->body_len, &r, why, sizeof why) == LAB_OK && !ot_id_ok(r.id))
        abort();
    ot_command_t c;
    if (ot_command_parse(m->body, m->body_len, &c, why, sizeof why) == LAB_OK) {
        if (c.status == OT_CMD_FAILED && !c.error_type[0])
            abort();
        if (c.result_id[0] && !ot_id_ok(c.result_id))
            abort();
        char target[160];
        if (ot_id_ok(c.id) && ot_command_target(target, sizeof target, c.id, 1) <= 0)
            abort();
    }
    ot_error_t e;
    ot_error_parse(m->body, m->body_len, &e, why, sizeof why);
}

/* A parsed response, written again, reads back the same. */
static void round_trip(const httpmsg_msg_t *m)
{
    static char out[BODY_MAX + 2 * HTTPMSG_HEAD_MAX];
    int n = httpmsg_response(out, sizeof out, m->status, m->reason, NULL, 0, m->body, m->body_len,
                             !m->keep_alive);
    if (n == LAB_EINVAL)
        return; /* a reason phrase the encoder will not write (it never sends one) */
    if (n < 0)
        abort();
    static httpmsg_msg_t back;
    httpmsg_msg_init(&back, false, BODY_MAX);
    size_t used;
    int rc = httpmsg_msg_feed(&back, (const uint8_t *)out, (size_t)n, &used);
    bool bodiless = m->status < 200 || m->status == 204 || m->status == 304;
    if (rc != LAB_OK || used != (size_t)n || back.status != m->status ||
        (!bodiless &&
         (back.body_len != m->body_len || memcmp(back.body, m->body, m->body_len) != 0)))
        abort();
    httpmsg_msg_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool request = data[0] & 1;
    size_t chunk = (size_t)(data[0] >> 1) % 31 + 1;
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, request, BODY_MAX);
    for (size_t i = 1; i < size;) {
        size_t n = size - i < chunk ? size - i : chunk, used = 0;
        int rc = httpmsg_msg_feed(&m, data + i, n, &used);
        if (used > n || m.body_len > BODY_MAX || (m.body && m.body[m.body_len] != '\0'))
            abort();
        i += used;
        if (rc == LAB_EAGAIN) {
            if (used != n)
                abort();
            continue;
        }
        if (rc < 0) {
            if (!m.why[0])
                abort();
            break;
        }
        if (m.content_length >= 0 && !m.chunked && (long long)m.body_len != m.content_length &&
            m.status != 204 && m.status != 304 && m.status >= 200)
            abort();
        read_body(&m, request);
        if (!request)
            round_trip(&m);
        httpmsg_msg_reset(&m); /* the next message on the same connection */
    }
    if (httpmsg_msg_eof(&m) == LAB_OK && m.body_len)
        read_body(&m, request);
    httpmsg_msg_free(&m);
    return 0;
}
