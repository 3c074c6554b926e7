/* libFuzzer target: every register of both maps decoded from fuzzed words, and values that
 * decode re-encoded to the same words (scaled registers) or the same value (floats). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/modbus_maps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 6)
        return 0;
    uint16_t w[2] = {(uint16_t)(data[0] << 8 | data[1]), (uint16_t)(data[2] << 8 | data[3])};
    int dp = data[4] % 6; /* 5 is invalid on purpose */
    int full = data[5] & 1;
    modbus_device_t devs[] = {MODBUS_DEV_CN7500, MODBUS_DEV_EUROTHERM3200};
    for (size_t d = 0; d < 2; d++) {
        size_t n;
        const modbus_reg_t *t = modbus_map_table(devs[d], &n);
        for (size_t i = 0; i < n; i++) {
            double v;
            uint16_t addr;
            size_t nw;
            if (modbus_reg_address(&t[i], full, &addr, &nw) != LAB_OK)
                continue;
            if (modbus_reg_decode(&t[i], w, nw, dp, full, &v) != LAB_OK)
                continue;
            modbus_access_t a;
            int rc = modbus_reg_encode(&t[i], v, dp, full, &a);
            if (rc == LAB_OK && t[i].type != MODBUS_BOOL &&
                (a.w[0] != w[0] || (nw == 2 && a.w[1] != w[1])))
                abort();
        }
    }
    if (size >= 14) {
        double x;
        memcpy(&x, data + 6, sizeof x);
        uint16_t ww[2], one;
        if (modbus_float_to_words(x, ww) == LAB_OK && !isfinite(modbus_words_to_float(ww)))
            abort();
        modbus_scaled_to_word(x, dp, data[5] & 2, &one);
        modbus_ms_to_words(x, ww);
    }
    return 0;
}
