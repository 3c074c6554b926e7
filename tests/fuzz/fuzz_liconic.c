/* libFuzzer target: the Liconic line framer, command and reply parsers, and their round trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/liconic.h"

static int on_line(void *ud, const char *line, size_t len, int err)
{
    (void)ud;
    if (err)
        return 0;
    liconic_cmd_t c, back;
    char buf[64];
    if (liconic_parse_cmd(line, len, &c) == LAB_OK) {
        int n = liconic_encode_cmd(&c, buf, sizeof buf);
        if (n < 2 || liconic_parse_cmd(buf, (size_t)n - 1, &back) != LAB_OK || back.op != c.op ||
            back.addr != c.addr || back.value != c.value)
            abort();
    }
    liconic_reply_t r, rb;
    if (liconic_parse_reply(line, len, &r) == LAB_OK) {
        int n = liconic_encode_reply(&r, buf, sizeof buf);
        if (n < 3 || liconic_parse_reply(buf, (size_t)n - 2, &rb) != LAB_OK || rb.kind != r.kind ||
            rb.value != r.value || rb.error != r.error)
            abort();
        liconic_handler_error_t he;
        liconic_handler_error_lookup((int)(r.value % 100000), &he);
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
