/* libFuzzer target: the Cytomat telegram and reply parsers over the line framer, their round
 * trips, the register and climate value parsers and the slot addresses of every model. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/cytomat.h"

static int on_line(void *ud, const char *line, size_t len, int err)
{
    (void)ud;
    if (err)
        return 0;
    cytomat_cmd_t c, back;
    char buf[96];
    if (cytomat_parse_cmd(line, len, &c) == LAB_OK) {
        int n = cytomat_encode_cmd(&c, true, buf, sizeof buf);
        if (n < 7 || cytomat_parse_cmd(buf, (size_t)n - 2, &back) != LAB_OK ||
            strcmp(back.type, c.type) || strcmp(back.code, c.code) || strcmp(back.params, c.params))
            abort();
        static cytomat_cassettes_t racks;
        if (!racks.n) {
            char err[256];
            cytomat_cassettes_parse(NULL,
                                    "1:cytomat_rack_17mm_28, 2:cytomat_rack_50mm_10, "
                                    "3:cytomat_rack_9mm_51",
                                    0, &racks, err, sizeof err);
        }
        for (int m = 0; m < CYTOMAT_NMODELS; m++) {
            int cs, sl;
            char p[16];
            if (cytomat_slot_parse((cytomat_model_t)m, c.params, &racks, &cs, &sl) == LAB_OK &&
                (cytomat_slot_param((cytomat_model_t)m, cs, sl, &racks, p, sizeof p) < 0 ||
                 strcmp(p, c.params) != 0))
                abort();
        }
    }
    cytomat_reply_t r, rb;
    if (cytomat_parse_reply(line, len, &r) == LAB_OK) {
        int n = cytomat_encode_reply(&r, buf, sizeof buf);
        if (n < 3 || cytomat_parse_reply(buf, (size_t)n - 1, &rb) != LAB_OK || rb.kind != r.kind ||
            rb.byte != r.byte || strcmp(rb.code, r.code) || strcmp(rb.value, r.value))
            abort();
        int v;
        double a, b;
        if (r.kind == CYTOMAT_REPLY_CHECK) {
            if (cytomat_parse_hex_byte(r.value, &v) == LAB_OK && (v < 0 || v > 255))
                abort();
            cytomat_parse_climate(r.value, &a, &b);
            cytomat_cassettes_t cs;
            char err[128];
            if (cytomat_cassettes_parse(NULL, r.value, 0, &cs, err, sizeof err) == LAB_OK &&
                (cs.n < 1 || cs.n > CYTOMAT_CASSETTES_MAX))
                abort();
        }
        cytomat_command_error_text(r.byte);
        cytomat_error_register_text(r.byte);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static proto_lines_t lb;
    if (size == 0)
        return 0;
    /* The first byte picks the chunk size, so splits inside frames are exercised. */
    size_t chunk = (size_t)(data[0] % 17) + 1;
    proto_lines_init(&lb);
    for (size_t i = 1; i < size; i += chunk) {
        size_t n = size - i < chunk ? size - i : chunk;
        proto_lines_feed(&lb, data + i, n, on_line, NULL);
    }
    return 0;
}
