/* libFuzzer target: the Keyence reply and command parsers behind the line framer, and their
 * round trips (what parses encodes back to a line that parses the same). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/keyence.h"

static int on_line(void *ud, const char *line, size_t len, int err)
{
    (void)ud;
    if (err)
        return 0;
    char buf[KEYENCE_DATA_MAX + 8];
    keyence_cmd_t c, cb;
    if (keyence_parse_cmd(line, len, &c) == LAB_OK) {
        int n = keyence_encode_cmd(c, buf, sizeof buf);
        if (n < 2 || keyence_parse_cmd(buf, (size_t)n - 1, &cb) != LAB_OK || cb != c)
            abort();
    }
    keyence_reply_t r, rb;
    if (keyence_parse_reply(line, len, &r) == LAB_OK) {
        int n = keyence_encode_reply(&r, buf, sizeof buf);
        if (n < 2 || (size_t)n - 1 != len || memcmp(buf, line, len) != 0 ||
            keyence_parse_reply(buf, (size_t)n - 1, &rb) != LAB_OK || rb.kind != r.kind ||
            rb.code != r.code || rb.len != r.len)
            abort();
        if (r.kind == KEYENCE_REPLY_DATA && (r.len == 0 || r.len > KEYENCE_DATA_MAX))
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static proto_lines_t lb;
    if (size == 0)
        return 0;
    /* The first byte picks the chunk size, so splits inside lines are exercised. */
    size_t chunk = (size_t)(data[0] % 17) + 1;
    proto_lines_init(&lb);
    for (size_t i = 1; i < size; i += chunk) {
        size_t n = size - i < chunk ? size - i : chunk;
        proto_lines_feed(&lb, data + i, n, on_line, NULL);
    }
    return 0;
}
