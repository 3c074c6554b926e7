/* Register maps of the Modbus temperature controllers as tables, the function codes each entry is
 * read and written with, and the pure conversions between engineering values and 16-bit register
 * words. No Modbus I/O here: the driver's worker thread owns libmodbus; the simulator serves these
 * same tables.
 *
 * Omega CN7500 (CN7200/7600/7800 family), holding registers and one bit:
 *   addresses and scaling from pyhys/minimalmodbus omegacn7500.py (commit 696b61c7, the last
 *   before its removal: PV 0x1000 and SV 0x1001 with 1 decimal, output 1 at 0x1012 in % with
 *   1 decimal, control method 0x1005, start pattern 0x1030, run/stop bit 0x0814, pattern
 *   set points 0x2000 + 8*pattern + step, step times 0x2080 + ..., actual step 0x1040 + pattern,
 *   cycles 0x1050 + pattern, link 0x1060 + pattern) and its exchanges recorded on a real CN7500
 *   in tests/test_omegacn7500.py: registers are read with function 03 and written with 16, the
 *   run bit is read with 02 (discrete input) and written with 05 (coil). Output 2 (0x1013) has
 *   1 decimal as well (tests/test_deltaDTB4824.py, the Delta DTB the CN7500 is built on). The
 *   rest of the 0x10xx block from the AGG Software register list
 *   for CN7200/CN7500/CN7600/CN7800 (its offsets are one below the protocol addresses, as PV 4095
 *   vs 0x1000 shows).
 * Eurotherm 3200: parameters from the 3200-series minimalmodbus driver ("Driver for Eurotherm
 *   3200 series built on minimalmodbus"): 16-bit scaled access at the parameter number with the
 *   instrument's configured decimal places, full-resolution IEEE 754 single floats (and 32-bit
 *   times in ms) at 0x8000 + 2 * parameter, high word first. Scaled examples cross-checked with
 *   minimalmodbus tests/test_eurotherm3500.py (the 2000-series addresses are shared). */
#ifndef LAB_PROTO_MODBUS_MAPS_H
#define LAB_PROTO_MODBUS_MAPS_H

#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

typedef enum modbus_device { MODBUS_DEV_CN7500, MODBUS_DEV_EUROTHERM3200 } modbus_device_t;

/* MODBUS_DISCRETE: a bit read as a discrete input (function 02) and written as a coil (05) at the
 * same address, as the CN7500's bit region is. */
typedef enum modbus_space { MODBUS_HOLDING, MODBUS_COIL, MODBUS_DISCRETE } modbus_space_t;

typedef enum modbus_type {
    MODBUS_S16,     /* one word, two's complement, scaled by 10^decimals */
    MODBUS_U16,     /* one word, unsigned, scaled by 10^decimals */
    MODBUS_BOOL,    /* a coil or a discrete input */
    MODBUS_FLOAT32, /* two words, IEEE 754 single, high word first */
    MODBUS_TIME32,  /* two words, unsigned milliseconds, high word first */
} modbus_type_t;

/* decimals == MODBUS_DP_CONFIGURED: set on the instrument (Eurotherm display resolution); the
 * caller passes the configured value to the conversions. */
#define MODBUS_DP_CONFIGURED (-1)

typedef struct modbus_reg {
    modbus_device_t dev;
    const char *name;
    modbus_space_t space;
    uint16_t addr;
    modbus_type_t type;
    int decimals;
    const char *unit; /* "degC", "%", "" */
    int writable;
    const char *const *enum_names; /* NULL-terminated names of the values 0, 1, ... or NULL */
} modbus_reg_t;

const modbus_reg_t *modbus_map_find(modbus_device_t dev, const char *name);
const modbus_reg_t *modbus_map_at(modbus_device_t dev, modbus_space_t space, uint16_t addr);
/* The whole table of a device (for the simulator). */
const modbus_reg_t *modbus_map_table(modbus_device_t dev, size_t *n);

/* The Modbus function code that reads r (1, 2 or 3) and the one that writes it (5, 6 or 16): the
 * CN7500 writes its registers with 16 as recorded, the Eurotherm 3200 with 06. */
int modbus_reg_read_function(const modbus_reg_t *r);
int modbus_reg_write_function(const modbus_reg_t *r);

/* Conversions. decimals 0..4. Out-of-range values are LAB_ERANGE, never wrapped. */
int modbus_scaled_to_word(double v, int decimals, int is_signed, uint16_t *w);
double modbus_word_to_scaled(uint16_t w, int decimals, int is_signed);
int modbus_float_to_words(double v, uint16_t w[2]);
double modbus_words_to_float(const uint16_t w[2]);
int modbus_ms_to_words(double seconds, uint16_t w[2]);
double modbus_words_to_ms(const uint16_t w[2]);

/* Register-driven conversion: how many words, at which address, for value v.
 * full_res = 1 uses the Eurotherm float region (addr 0x8000 + 2 * parameter). */
typedef struct modbus_access {
    uint16_t addr;
    size_t nwords;
    uint16_t w[2];
} modbus_access_t;

int modbus_reg_encode(const modbus_reg_t *r, double v, int decimals, int full_res,
                      modbus_access_t *out);
int modbus_reg_decode(const modbus_reg_t *r, const uint16_t *w, size_t nwords, int decimals,
                      int full_res, double *v);
int modbus_reg_address(const modbus_reg_t *r, int full_res, uint16_t *addr, size_t *nwords);

/* Computed addresses: pattern 0..7, step 0..7. */
int cn7500_pattern_setpoint_addr(int pattern, int step, uint16_t *addr);
int cn7500_pattern_time_addr(int pattern, int step, uint16_t *addr);
int eurotherm_float_addr(int param, uint16_t *addr);

#endif
