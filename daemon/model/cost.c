/* Run costs (see cost.h). */
#include "daemon/model/cost.h"
#include "core/clock.h"

#include <math.h>
#include <string.h>

/* Money to a millionth of the currency: a figure with at most 15 significant digits reads back
 * as the same number from any JSON writer that keeps 15, so copies of it compare equal. */
static double money(double v)
{
    return round(v * 1e6) / 1e6;
}

static double price_of(const lab_cfg_price_t *v, int n, const char *name, double fallback)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return v[i].value;
    return fallback;
}

static double add_num(json_t *obj, const char *key, double v)
{
    double was = json_number_value(json_object_get(obj, key));
    json_object_set_new(obj, key, json_real(was + v));
    return was + v;
}

void lab_consumed_add(json_t *step, int tips, const char *reagent, double ul)
{
    json_t *c = json_object_get(step, "consumed");
    if (!json_is_object(c)) {
        c = json_object();
        json_object_set_new(step, "consumed", c);
    }
    if (tips > 0)
        json_object_set_new(c, "tips",
                            json_integer(json_integer_value(json_object_get(c, "tips")) + tips));
    if (reagent && ul > 0) {
        json_t *r = json_object_get(c, "reagents");
        if (!json_is_object(r)) {
            r = json_object();
            json_object_set_new(c, "reagents", r);
        }
        add_num(r, reagent, ul);
    }
}

json_t *lab_run_cost(const lab_config_t *cfg, const json_t *run)
{
    json_t *secs = json_object(), *ul = json_object();
    json_int_t tips = 0;
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(run, "steps"), i, st)
    {
        const char *inst = json_string_value(json_object_get(st, "instrument"));
        int64_t a, b;
        const char *sa = json_string_value(json_object_get(st, "started_at"));
        const char *sb = json_string_value(json_object_get(st, "ended_at"));
        if (inst && sa && sb && lab_time_parse(sa, &a) == 0 && lab_time_parse(sb, &b) == 0 && b > a)
            add_num(secs, inst, (double)(b - a) / 1000.0);
        json_t *c = json_object_get(st, "consumed");
        tips += json_integer_value(json_object_get(c, "tips"));
        const char *name;
        json_t *v;
        json_object_foreach(json_object_get(c, "reagents"), name, v)
        {
            if (json_is_number(v))
                add_num(ul, name, json_number_value(v));
        }
    }
    double total = cfg->costs_plate;
    json_t *insts = json_array(), *reagents = json_array();
    const char *name;
    json_t *v;
    json_object_foreach(secs, name, v)
    {
        double s = json_number_value(v);
        double ph = price_of(cfg->costs_instruments, cfg->n_costs_instruments, name,
                             cfg->costs_instrument_hour);
        double cost = money(s / 3600.0 * ph);
        total += cost;
        json_array_append_new(insts, json_pack("{s:s, s:f, s:f, s:f}", "instrument", name,
                                               "seconds", s, "per_hour", ph, "cost", cost));
    }
    json_object_foreach(ul, name, v)
    {
        double u = json_number_value(v);
        double pu = price_of(cfg->costs_reagents, cfg->n_costs_reagents, name, 0);
        double cost = money(u * pu);
        total += cost;
        json_array_append_new(reagents, json_pack("{s:s, s:f, s:f, s:f}", "reagent", name, "ul", u,
                                                  "per_ul", pu, "cost", cost));
    }
    double tip_cost = money((double)tips * cfg->costs_tip);
    total = money(total + tip_cost);
    json_t *out = json_pack("{s:s, s:f, s:f, s:o, s:{s:I, s:f, s:f}, s:o}", "currency",
                            cfg->costs_currency ? cfg->costs_currency : "EUR", "total", total,
                            "plate", cfg->costs_plate, "instruments", insts, "tips", "count", tips,
                            "each", cfg->costs_tip, "cost", tip_cost, "reagents", reagents);
    json_decref(secs);
    json_decref(ul);
    return out;
}
