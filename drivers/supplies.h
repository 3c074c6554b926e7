/* A liquid handler's consumables as its [instrument ID] section declares them: tip racks
 * (tip_racks, tips_per_rack) and reagent troughs (troughs = NAME: µL, NAME: µL). The keys are
 * accepted on every section and refused, with their line, on an instrument that is not a liquid
 * handler; the daemon (daemon/labware/consumables.c) keeps the counts. */
#ifndef LAB_DRIVERS_SUPPLIES_H
#define LAB_DRIVERS_SUPPLIES_H

#include "core/text.h"
#include "drivers/driver.h"

#include <stddef.h>

#define LAB_SUPPLY_TROUGHS_MAX 16
#define LAB_SUPPLY_TROUGH_UL_MAX 10000000.0 /* 10 L: no trough on a deck holds more */
#define LAB_SUPPLY_RACKS_MAX 100
#define LAB_SUPPLY_TIPS_PER_RACK_MAX 1536

typedef struct lab_supply_trough {
    char name[LAB_TEXT_BYTES(LAB_REAGENT_CHARS)];
    double ul; /* what it holds when full */
} lab_supply_trough_t;

/* tip_racks, tips_per_rack, troughs: checked with the common keys (lab_driver_check). */
extern const lab_drv_key_t lab_drv_supply_keys[];

/* "substrate: 25000, buffer: 50000" into out (at most max): the count, or LAB_EINVAL with why
 * in err. A name is 1..LAB_REAGENT_CHARS characters of UTF-8 without ',' or ':', given once; a
 * volume a number of µL in (0, LAB_SUPPLY_TROUGH_UL_MAX]. */
int lab_supply_troughs_parse(const char *s, lab_supply_trough_t *out, int max, char *err,
                             size_t errlen);

/* The section's consumables keys beyond their types: only on a liquid handler (ops), the troughs'
 * syntax, tips_per_rack only with tip_racks. Each problem to cb with its line; returns how many. */
int lab_supply_check(const lab_drv_conf_t *conf, const lab_driver_ops_t *ops,
                     lab_drv_conf_err_cb cb, void *ctx);

/* Whether the section declares any consumables (tip racks or troughs). */
bool lab_supply_declared(const lab_drv_conf_t *conf);

#endif
