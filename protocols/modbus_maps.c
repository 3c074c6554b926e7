/* Omega CN7500 and Eurotherm 3200 register tables and word conversions. Sources in the header. */
#include "protocols/modbus_maps.h"

#include <float.h>
#include <math.h>
#include <string.h>

static const char *const cn_control[] = {"pid", "on_off", "manual_tuning", "program", NULL};
static const char *const et_setpoint[] = {"sp1", "sp2", NULL};
static const char *const et_program[] = {"reset", "run", "hold", "end", NULL};
static const char *const et_end_type[] = {"off", "dwell", "sp2", "reset", NULL};
static const char *const et_ramp_units[] = {"mins", "hours", "secs", NULL};
static const char *const no_yes[] = {"off", "on", NULL};

#define CN(name, space, addr, type, dp, unit, w, en)                                               \
    {                                                                                              \
        MODBUS_DEV_CN7500, name, space, addr, type, dp, unit, w, en                                \
    }
#define ET(name, addr, type, unit, w, en)                                                          \
    {                                                                                              \
        MODBUS_DEV_EUROTHERM3200, name, MODBUS_HOLDING, addr, type,                                \
            type == MODBUS_S16 ? MODBUS_DP_CONFIGURED : 0, unit, w, en                             \
    }

static const modbus_reg_t cn7500[] = {
    CN("pv", MODBUS_HOLDING, 0x1000, MODBUS_S16, 1, "degC", 0, NULL),
    CN("sv", MODBUS_HOLDING, 0x1001, MODBUS_S16, 1, "degC", 1, NULL),
    CN("range_high", MODBUS_HOLDING, 0x1002, MODBUS_S16, 1, "degC", 1, NULL),
    CN("range_low", MODBUS_HOLDING, 0x1003, MODBUS_S16, 1, "degC", 1, NULL),
    CN("sensor_type", MODBUS_HOLDING, 0x1004, MODBUS_U16, 0, "", 1, NULL),
    CN("control_method", MODBUS_HOLDING, 0x1005, MODBUS_U16, 0, "", 1, cn_control),
    CN("heat_cool_select", MODBUS_HOLDING, 0x1006, MODBUS_U16, 0, "", 1, NULL),
    CN("proportional_band", MODBUS_HOLDING, 0x1009, MODBUS_U16, 0, "", 1, NULL),
    CN("integral_time", MODBUS_HOLDING, 0x100A, MODBUS_U16, 0, "", 1, NULL),
    CN("derivative_time", MODBUS_HOLDING, 0x100B, MODBUS_U16, 0, "", 1, NULL),
    CN("output1", MODBUS_HOLDING, 0x1012, MODBUS_U16, 1, "%", 1, NULL),
    CN("output2", MODBUS_HOLDING, 0x1013, MODBUS_U16, 1, "%", 1, NULL),
    CN("alarm1_type", MODBUS_HOLDING, 0x1020, MODBUS_U16, 0, "", 1, NULL),
    CN("led_status", MODBUS_HOLDING, 0x102A, MODBUS_U16, 0, "", 0, NULL),
    CN("pushbutton_status", MODBUS_HOLDING, 0x102B, MODBUS_U16, 0, "", 0, NULL),
    CN("lock_status", MODBUS_HOLDING, 0x102C, MODBUS_U16, 0, "", 1, NULL),
    CN("software_version", MODBUS_HOLDING, 0x102F, MODBUS_U16, 0, "", 0, NULL),
    CN("start_pattern", MODBUS_HOLDING, 0x1030, MODBUS_U16, 0, "", 1, NULL),
    CN("run", MODBUS_DISCRETE, 0x0814, MODBUS_BOOL, 0, "", 1, no_yes),
};

static const modbus_reg_t eurotherm3200[] = {
    ET("pv", 1, MODBUS_S16, "degC", 0, NULL),
    ET("target_setpoint", 2, MODBUS_S16, "degC", 1, NULL),
    ET("output_level", 3, MODBUS_S16, "%", 0, NULL),
    ET("working_output", 4, MODBUS_S16, "%", 1, NULL),
    ET("working_setpoint", 5, MODBUS_S16, "degC", 0, NULL),
    ET("active_setpoint", 15, MODBUS_U16, "", 1, et_setpoint),
    ET("program_status", 23, MODBUS_U16, "", 1, et_program),
    ET("setpoint1", 24, MODBUS_S16, "degC", 1, NULL),
    ET("setpoint2", 25, MODBUS_S16, "degC", 1, NULL),
    ET("remote_setpoint", 26, MODBUS_S16, "degC", 1, NULL),
    ET("setpoint_rate_limit", 35, MODBUS_S16, "degC/unit", 1, NULL),
    ET("calculated_error", 39, MODBUS_S16, "degC", 0, NULL),
    ET("remote_setpoint_enable", 276, MODBUS_U16, "", 1, no_yes),
    ET("end_type", 328, MODBUS_U16, "", 1, et_end_type),
    ET("program_cycles", 332, MODBUS_U16, "", 1, NULL),
    ET("current_program_cycle", 333, MODBUS_U16, "", 0, NULL),
    ET("ramp_units", 531, MODBUS_U16, "", 1, et_ramp_units),
    ET("segment1_dwell", 1280, MODBUS_TIME32, "s", 1, NULL),
    ET("segment1_target", 1281, MODBUS_S16, "degC", 1, NULL),
    ET("segment1_ramp_rate", 1282, MODBUS_S16, "degC/unit", 1, NULL),
    ET("segment2_dwell", 1283, MODBUS_TIME32, "s", 1, NULL),
    ET("segment2_target", 1284, MODBUS_S16, "degC", 1, NULL),
    ET("segment2_ramp_rate", 1285, MODBUS_S16, "degC/unit", 1, NULL),
    ET("segment3_dwell", 1286, MODBUS_TIME32, "s", 1, NULL),
    ET("segment3_target", 1287, MODBUS_S16, "degC", 1, NULL),
    ET("segment3_ramp_rate", 1288, MODBUS_S16, "degC/unit", 1, NULL),
    ET("segment4_dwell", 1289, MODBUS_TIME32, "s", 1, NULL),
    ET("segment4_target", 1290, MODBUS_S16, "degC", 1, NULL),
    ET("segment4_ramp_rate", 1291, MODBUS_S16, "degC/unit", 1, NULL),
};

const modbus_reg_t *modbus_map_table(modbus_device_t dev, size_t *n)
{
    switch (dev) {
    case MODBUS_DEV_CN7500:
        *n = sizeof cn7500 / sizeof cn7500[0];
        return cn7500;
    case MODBUS_DEV_EUROTHERM3200:
        *n = sizeof eurotherm3200 / sizeof eurotherm3200[0];
        return eurotherm3200;
    }
    *n = 0;
    return NULL;
}

const modbus_reg_t *modbus_map_find(modbus_device_t dev, const char *name)
{
    size_t n;
    const modbus_reg_t *t = modbus_map_table(dev, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

const modbus_reg_t *modbus_map_at(modbus_device_t dev, modbus_space_t space, uint16_t addr)
{
    size_t n;
    const modbus_reg_t *t = modbus_map_table(dev, &n);
    for (size_t i = 0; i < n; i++)
        if (t[i].space == space && t[i].addr == addr)
            return &t[i];
    return NULL;
}

int modbus_reg_read_function(const modbus_reg_t *r)
{
    switch (r->space) {
    case MODBUS_COIL:
        return 1;
    case MODBUS_DISCRETE:
        return 2;
    case MODBUS_HOLDING:
        break;
    }
    return 3;
}

int modbus_reg_write_function(const modbus_reg_t *r)
{
    if (r->space != MODBUS_HOLDING)
        return 5;
    /* minimalmodbus' write_register (function 16) is what the recorded CN7500 answered. */
    return r->dev == MODBUS_DEV_CN7500 ? 16 : 6;
}

static const double pow10_table[] = {1, 10, 100, 1000, 10000};

int modbus_scaled_to_word(double v, int decimals, int is_signed, uint16_t *w)
{
    if (decimals < 0 || decimals > 4 || !isfinite(v))
        return LAB_ERANGE;
    double raw = round(v * pow10_table[decimals]);
    if (is_signed ? raw < -32768 || raw > 32767 : raw < 0 || raw > 65535)
        return LAB_ERANGE;
    *w = (uint16_t)(int32_t)raw;
    return LAB_OK;
}

double modbus_word_to_scaled(uint16_t w, int decimals, int is_signed)
{
    if (decimals < 0 || decimals > 4)
        return NAN;
    double raw = is_signed ? (double)(int16_t)w : (double)w;
    return raw / pow10_table[decimals];
}

int modbus_float_to_words(double v, uint16_t w[2])
{
    if (!isfinite(v) || fabs(v) > FLT_MAX)
        return LAB_ERANGE;
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    w[0] = (uint16_t)(u >> 16);
    w[1] = (uint16_t)u;
    return LAB_OK;
}

double modbus_words_to_float(const uint16_t w[2])
{
    uint32_t u = (uint32_t)w[0] << 16 | w[1];
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int modbus_ms_to_words(double seconds, uint16_t w[2])
{
    if (!isfinite(seconds) || seconds < 0 || seconds * 1000 > 4294967295.0)
        return LAB_ERANGE;
    uint32_t ms = (uint32_t)llround(seconds * 1000);
    w[0] = (uint16_t)(ms >> 16);
    w[1] = (uint16_t)ms;
    return LAB_OK;
}

double modbus_words_to_ms(const uint16_t w[2])
{
    return ((uint32_t)w[0] << 16 | w[1]) / 1000.0;
}

int eurotherm_float_addr(int param, uint16_t *addr)
{
    if (param < 0 || param > 0x3FFF)
        return LAB_ERANGE;
    *addr = (uint16_t)(0x8000 + 2 * param);
    return LAB_OK;
}

static int pattern_addr(uint16_t base, int pattern, int step, uint16_t *addr)
{
    if (pattern < 0 || pattern > 7 || step < 0 || step > 7)
        return LAB_ERANGE;
    *addr = (uint16_t)(base + 8 * pattern + step);
    return LAB_OK;
}

int cn7500_pattern_setpoint_addr(int pattern, int step, uint16_t *addr)
{
    return pattern_addr(0x2000, pattern, step, addr);
}

int cn7500_pattern_time_addr(int pattern, int step, uint16_t *addr)
{
    return pattern_addr(0x2080, pattern, step, addr);
}

static int effective_dp(const modbus_reg_t *r, int decimals)
{
    return r->decimals == MODBUS_DP_CONFIGURED ? decimals : r->decimals;
}

int modbus_reg_address(const modbus_reg_t *r, int full_res, uint16_t *addr, size_t *nwords)
{
    int wide = r->type == MODBUS_FLOAT32 || r->type == MODBUS_TIME32;
    if (r->dev == MODBUS_DEV_EUROTHERM3200 && (full_res || wide)) {
        *nwords = 2;
        return eurotherm_float_addr(r->addr, addr);
    }
    if (full_res || wide)
        return LAB_EUNKNOWN; /* the CN7500 has no 32-bit region */
    *addr = r->addr;
    *nwords = 1;
    return LAB_OK;
}

static int enum_ok(const modbus_reg_t *r, double v)
{
    if (!r->enum_names)
        return 1;
    size_t n = 0;
    while (r->enum_names[n])
        n++;
    return v >= 0 && v < (double)n && v == floor(v);
}

int modbus_reg_encode(const modbus_reg_t *r, double v, int decimals, int full_res,
                      modbus_access_t *out)
{
    int rc = modbus_reg_address(r, full_res, &out->addr, &out->nwords);
    if (rc)
        return rc;
    if (!enum_ok(r, v))
        return LAB_ERANGE;
    if (r->type == MODBUS_TIME32)
        return modbus_ms_to_words(v, out->w);
    if (out->nwords == 2)
        return modbus_float_to_words(v, out->w);
    if (r->type == MODBUS_BOOL) {
        if (v != 0 && v != 1)
            return LAB_ERANGE;
        /* Function 05 writes a coil as 0xFF00 (on) or 0x0000 (off). */
        out->w[0] = v ? 0xFF00 : 0x0000;
        return LAB_OK;
    }
    return modbus_scaled_to_word(v, effective_dp(r, decimals), r->type == MODBUS_S16, out->w);
}

int modbus_reg_decode(const modbus_reg_t *r, const uint16_t *w, size_t nwords, int decimals,
                      int full_res, double *v)
{
    uint16_t addr;
    size_t need;
    int rc = modbus_reg_address(r, full_res, &addr, &need);
    if (rc)
        return rc;
    if (nwords != need)
        return LAB_ESYNTAX;
    if (r->type == MODBUS_TIME32)
        *v = modbus_words_to_ms(w);
    else if (need == 2)
        *v = modbus_words_to_float(w);
    else if (r->type == MODBUS_BOOL)
        *v = w[0] != 0;
    else {
        int dp = effective_dp(r, decimals);
        if (dp < 0 || dp > 4)
            return LAB_ERANGE;
        *v = modbus_word_to_scaled(w[0], dp, r->type == MODBUS_S16);
    }
    return isfinite(*v) ? LAB_OK : LAB_ERANGE;
}
