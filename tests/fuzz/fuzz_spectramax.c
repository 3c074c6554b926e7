/* libFuzzer target: SpectraMax reply-field receiver, field kinds, status, temperature, data and
 * command parsers; data that parse are re-encoded and must parse to the same wells. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/spectramax.h"

static int on_field(void *ud, const char *f, size_t len, int err)
{
    (void)ud;
    if (err)
        return 0;
    int code;
    char w[32];
    double a, b;
    smax_field_kind(f, len, &code);
    smax_parse_status(f, len, w, sizeof w);
    smax_parse_temp(f, len, &a, &b);
    smax_reply_fields(f, len);
    if (memchr(f, SMAX_TERM, len) || strlen(f) != len)
        abort(); /* a field never holds its terminator, and is NUL-terminated */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static smax_rx_t rx;
    static smax_plate_t p, q;
    static smax_cmd_t c;
    static char buf[SMAX_FIELD_MAX * 2];
    if (size < 1)
        return 0;
    int big = data[0] & 1;
    int rows = big ? 16 : 8 - (data[0] >> 5), cols = big ? 24 : 12 - (data[0] >> 5);
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    smax_rx_init(&rx);
    smax_rx_feed(&rx, d, n, on_field, NULL);
    smax_cmd_parse((const char *)d, n, &c);

    if (smax_parse_data((const char *)d, n, rows, cols, &p) == LAB_OK) {
        if (p.wavelength_nm <= 0)
            abort();
        int len = smax_encode_data(&p, buf, sizeof buf);
        if (len > 0) {
            if (smax_parse_data(buf, (size_t)len, rows, cols, &q) != LAB_OK)
                abort();
            for (int r = 0; r < rows; r++)
                for (int k = 0; k < cols; k++)
                    if (q.state[r][k] != p.state[r][k] ||
                        (p.state[r][k] == SMAX_WELL_VALUE &&
                         fabs(q.value[r][k] - p.value[r][k]) > 5e-5))
                        abort();
        }
    }
    return 0;
}
