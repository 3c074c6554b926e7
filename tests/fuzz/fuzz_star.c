/* libFuzzer target: STAR messages split by the line framer, parameter accessors, the pending
 * table, and builder round trips of every parsed integer parameter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/star.h"

static star_pending_t pending;

static int on_line(void *ud, const char *line, size_t len, int err)
{
    static star_msg_t m, back;
    (void)ud;
    if (err || star_parse(line, len, &m) != LAB_OK)
        return 0;
    long list[32], v;
    unsigned long h;
    size_t n;
    char buf[PROTO_LINE_MAX + 64];
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, m.module, m.cmd, m.id);
    for (size_t i = 0; i < m.n_params; i++) {
        const char *name = m.params[i].name;
        star_param_hex(&m, name, &h);
        star_param_list(&m, name, list, 32, &n);
        if (star_param_int(&m, name, &v) == LAB_OK && star_param(&m, name) == &m.params[i])
            star_int(&b, name, v, (int)m.params[i].len);
    }
    int len2 = star_end(&b, 0);
    if (len2 > 0) {
        if (star_parse(buf, (size_t)len2, &back) != LAB_OK || back.id != m.id)
            abort();
    }
    char which[3];
    int trace = star_check_cmd(&m, 16, which);
    if (trace != 0 && trace != 30 && which[0] == '\0')
        abort();
    void *ud2;
    if (star_pending_take(&pending, &m, &ud2) != LAB_OK && m.id != STAR_NO_ID)
        star_pending_add(&pending, m.module, m.cmd, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static proto_lines_t lb;
    if (size == 0)
        return 0;
    size_t chunk = (size_t)(data[0] % 31) + 1;
    proto_lines_init(&lb);
    star_pending_init(&pending);
    for (size_t i = 1; i < size; i += chunk) {
        size_t n = size - i < chunk ? size - i : chunk;
        proto_lines_feed(&lb, data + i, n, on_line, NULL);
    }
    return 0;
}
