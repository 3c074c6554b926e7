/* libFuzzer target: BioTek reply receiver, command receiver, body, definition and small-reply
 * parsers; bodies that parse are re-encoded and must parse to the same wells. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/biotek.h"

static int on_frame(void *ud, const biotek_frame_t *f, int err)
{
    (void)ud;
    if (err)
        return 0;
    double t;
    char part[32], ver[32];
    biotek_parse_temperature(f->payload, f->len, &t);
    biotek_parse_version(f->payload, f->len, part, sizeof part, ver, sizeof ver);
    return 0;
}

static int on_cmd(void *ud, const biotek_cmd_t *c, int phase, int err)
{
    (void)ud;
    if (!err && phase == 1 && c->letter == 'D') {
        biotek_rect_t r;
        int wl;
        if (biotek_parse_absorbance(c->param, c->param_len, &r, &wl) == LAB_OK) {
            char buf[64];
            int n = biotek_encode_absorbance(&r, wl, buf, sizeof buf);
            if (n != (int)c->param_len + 1 || memcmp(buf, c->param, c->param_len) != 0)
                abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static biotek_rx_t rx;
    static biotek_cmd_rx_t crx;
    static biotek_plate_t p, q;
    static char buf[BIOTEK_FRAME_MAX * 2];
    if (size < 2)
        return 0;
    int big = data[0] & 1;
    int rows = big ? 16 : 8, cols = big ? 24 : 12;
    const uint8_t *d = data + 2;
    size_t n = size - 2;

    biotek_rx_init(&rx);
    biotek_rx_expect(&rx, (data[1] & 1) ? BIOTEK_EXPECT_ACK : BIOTEK_EXPECT_ETX);
    biotek_rx_feed(&rx, d, n, on_frame, NULL);
    biotek_cmd_rx_init(&crx);
    biotek_cmd_rx_feed(&crx, d, n, on_cmd, NULL);

    if (biotek_parse_body((const char *)d, n, rows, cols, &p) == LAB_OK) {
        /* Re-encode the bounding rectangle of what was read and compare the wells. */
        biotek_rect_t r = {rows + 1, cols + 1, 0, 0};
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < cols; k++)
                if (p.state[i][k]) {
                    r.row0 = i + 1 < r.row0 ? i + 1 : r.row0;
                    r.col0 = k + 1 < r.col0 ? k + 1 : r.col0;
                    r.row1 = i + 1 > r.row1 ? i + 1 : r.row1;
                    r.col1 = k + 1 > r.col1 ? k + 1 : r.col1;
                }
        int len = biotek_encode_body(&p, &r, BIOTEK_FMT_ABSORBANCE, p.code, buf, sizeof buf);
        if (len > 0 && biotek_parse_body(buf, (size_t)len - 1, rows, cols, &q) != LAB_OK)
            abort();
    }
    return 0;
}
