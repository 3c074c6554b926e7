/* The consumables keys of a liquid handler's section and the troughs' syntax (supplies.h). */
#include "drivers/supplies.h"
#include "core/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const lab_drv_key_t lab_drv_supply_keys[] = {
    {"tip_racks", LAB_DRV_KEY_INT, NULL, 0, LAB_SUPPLY_RACKS_MAX, NULL, 0,
     "liquid handlers: tip racks on the deck; the scheduler counts the tips they hold"},
    {"tips_per_rack", LAB_DRV_KEY_INT, "96", 1, LAB_SUPPLY_TIPS_PER_RACK_MAX, NULL, 0,
     "liquid handlers: tips in a full rack (with tip_racks)"},
    {"troughs", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, 0,
     "liquid handlers: reagent troughs and what each holds when full, in µL: "
     "`substrate: 25000, buffer: 50000`"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    return p;
}

/* One "NAME: µL" entry between p and end. */
static int trough_parse(const char *p, const char *end, int at, lab_supply_trough_t *t, char *err,
                        size_t errlen)
{
    p = skip_space(p, end);
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (p == end || !colon) {
        snprintf(err, errlen, "trough %d: expected NAME: µL, e.g. substrate: 25000", at);
        return LAB_EINVAL;
    }
    const char *ne = colon;
    while (ne > p && isspace((unsigned char)ne[-1]))
        ne--;
    size_t n = (size_t)(ne - p);
    if (!n) {
        snprintf(err, errlen, "trough %d: the name before ':' is empty", at);
        return LAB_EINVAL;
    }
    if (!lab_text_valid(p, n) || lab_text_chars(p, n) > LAB_REAGENT_CHARS) {
        snprintf(err, errlen, "trough %d: the name is not UTF-8 text of at most %d characters", at,
                 LAB_REAGENT_CHARS);
        return LAB_EINVAL;
    }
    memcpy(t->name, p, n);
    t->name[n] = '\0';
    const char *v = skip_space(colon + 1, end);
    char num[64];
    size_t vl = (size_t)(end - v);
    if (!vl || vl >= sizeof num) {
        snprintf(err, errlen, "trough %s: expected a volume in µL after ':'", t->name);
        return LAB_EINVAL;
    }
    memcpy(num, v, vl);
    num[vl] = '\0';
    char *e;
    errno = 0;
    double ul = strtod(num, &e);
    if (e == num || *e || errno || !isfinite(ul)) {
        snprintf(err, errlen, "trough %s: '%s' is not a volume in µL", t->name, num);
        return LAB_EINVAL;
    }
    if (!(ul > 0) || ul > LAB_SUPPLY_TROUGH_UL_MAX) {
        snprintf(err, errlen, "trough %s: %s µL is out of range (0, %.0f]", t->name, num,
                 LAB_SUPPLY_TROUGH_UL_MAX);
        return LAB_EINVAL;
    }
    t->ul = ul;
    return 0;
}

int lab_supply_troughs_parse(const char *s, lab_supply_trough_t *out, int max, char *err,
                             size_t errlen)
{
    int n = 0;
    const char *p = s ? s : "", *end = p + strlen(p);
    if (skip_space(p, end) == end) {
        snprintf(err, errlen, "expected NAME: µL, NAME: µL (e.g. substrate: 25000)");
        return LAB_EINVAL;
    }
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        if (n == max) {
            snprintf(err, errlen, "more than %d troughs", max);
            return LAB_EINVAL;
        }
        int rc = trough_parse(p, stop, n + 1, &out[n], err, errlen);
        if (rc)
            return rc;
        for (int i = 0; i < n; i++)
            if (strcmp(out[i].name, out[n].name) == 0) {
                snprintf(err, errlen, "trough %s is given twice", out[n].name);
                return LAB_EINVAL;
            }
        n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return n;
}

static const lab_drv_kv_t *kv_of(const lab_drv_conf_t *conf, const char *key)
{
    for (size_t i = 0; i < conf->n; i++)
        if (strcmp(conf->kv[i].key, key) == 0)
            return &conf->kv[i];
    return NULL;
}

bool lab_supply_declared(const lab_drv_conf_t *conf)
{
    return kv_of(conf, "tip_racks") || kv_of(conf, "troughs");
}

int lab_supply_check(const lab_drv_conf_t *conf, const lab_driver_ops_t *ops,
                     lab_drv_conf_err_cb cb, void *ctx)
{
    int n = 0;
    char buf[256];
    bool handler = ops && strcmp(ops->kind, "liquid_handler") == 0;
    for (const lab_drv_key_t *k = lab_drv_supply_keys; k->name; k++) {
        const lab_drv_kv_t *kv = kv_of(conf, k->name);
        if (!kv || handler || !ops)
            continue;
        snprintf(buf, sizeof buf, "only a liquid handler has tips and troughs; driver %s is a %s",
                 ops->name, ops->kind);
        cb(ctx, kv->line, kv->key, buf);
        n++;
    }
    if (!handler)
        return n;
    const lab_drv_kv_t *per = kv_of(conf, "tips_per_rack");
    if (per && !kv_of(conf, "tip_racks")) {
        cb(ctx, per->line, per->key, "needs tip_racks: how many racks of that many tips");
        n++;
    }
    const lab_drv_kv_t *tr = kv_of(conf, "troughs");
    lab_supply_trough_t t[LAB_SUPPLY_TROUGHS_MAX];
    if (tr && lab_supply_troughs_parse(tr->value, t, LAB_SUPPLY_TROUGHS_MAX, buf, sizeof buf) < 0) {
        cb(ctx, tr->line, tr->key, buf);
        n++;
    }
    return n;
}
