/* Step programs: how a workflow step's op becomes driver actions on the instrument it was
 * planned on. */
#include "daemon/sched/program.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

bool program_has_action(lab_driver_t *d, const char *name)
{
    for (const lab_drv_action_t *a = lab_driver_ops(d)->actions; a && a->name; a++)
        if (strcmp(a->name, name) == 0)
            return true;
    return false;
}

bool program_needs_site(const char *op, lab_driver_t *d)
{
    return strcmp(op, "incubate") == 0 && lab_driver_sites(d) > 0 &&
           program_has_action(d, "load") && program_has_action(d, "unload");
}

bool program_repeatable(const char *op)
{
    return strcmp(op, "dispense") != 0 && strcmp(op, "aspirate") != 0 &&
           strcmp(op, "transfer") != 0;
}

static json_t *entry(const char *action, json_t *params)
{
    return json_pack("{s:s,s:o}", "action", action, "params", params ? params : json_object());
}

/* Tips on or off: no liquid moves (a retry drops what may be left on first). */
static json_t *dry_entry(const char *action, json_t *params)
{
    json_t *e = entry(action, params);
    json_object_set_new(e, "dry", json_true());
    return e;
}

/* "B2:G11" (or one well) into 0-based rows and 1-based columns. */
static bool parse_wells(const char *s, int *r0, int *c0, int *r1, int *c1)
{
    char a, b;
    int x, y, n = 0;
    if (sscanf(s, " %c%d%n", &a, &x, &n) != 2)
        return false;
    *r0 = *r1 = toupper((unsigned char)a) - 'A';
    *c0 = *c1 = x;
    if (s[n] == ':') {
        if (sscanf(s + n + 1, " %c%d", &b, &y) != 2)
            return false;
        *r1 = toupper((unsigned char)b) - 'A';
        *c1 = y;
    }
    return *r0 >= 0 && *r0 <= *r1 && *r1 < 16 && *c0 >= 1 && *c0 <= *c1 && *c1 <= 24;
}

/* A liquid handler with channels: one tip per row of the rectangle, then per column an
 * aspirate from the reagent trough and a dispense down the column. */
static json_t *dispense_program(lab_driver_t *d, const json_t *params, char *err, size_t errlen)
{
    const char *reagent = json_string_value(json_object_get(params, "reagent"));
    json_t *vol = json_object_get(params, "volume_ul");
    const char *wells = json_string_value(json_object_get(params, "wells"));
    if (!reagent || !json_is_number(vol)) {
        snprintf(err, errlen, "a dispense step needs params reagent (text) and volume_ul");
        return NULL;
    }
    int r0, c0, r1, c1;
    if (!parse_wells(wells ? wells : "A1:H12", &r0, &c0, &r1, &c1)) {
        snprintf(err, errlen, "params wells '%s' is not a well or a range like A1:H12", wells);
        return NULL;
    }
    double ul = json_number_value(vol);
    json_t *prog = json_array();
    json_array_append_new(prog,
                          dry_entry("pick_up_tips", json_pack("{s:i}", "channels", r1 - r0 + 1)));
    for (int c = c0; c <= c1; c++) {
        char well[16];
        snprintf(well, sizeof well, "%c%d", 'A' + r0, c);
        json_array_append_new(
            prog, entry("aspirate", json_pack("{s:s,s:f}", "reagent", reagent, "volume_ul", ul)));
        json_array_append_new(
            prog, entry("dispense", json_pack("{s:s,s:f}", "well", well, "volume_ul", ul)));
    }
    json_array_append_new(prog, dry_entry("drop_tips", NULL));
    (void)d;
    return prog;
}

/* A campaign plate's dispense: per reagent of the design, fresh tips on every channel, then per
 * column an aspirate of each channel's own volume and a dispense down the column (on a 384-well
 * plate the channels reach every other row, so two passes per column). Columns that get none of
 * the reagent are left out. design = {"format": 96|384, "reagents": [NAME...],
 * "wells": {WELL: [uL per reagent]}}. */
static json_t *design_program(const json_t *design, int channels, char *err, size_t errlen)
{
    json_t *reagents = json_object_get(design, "reagents");
    json_t *wells = json_object_get(design, "wells");
    int format = (int)json_integer_value(json_object_get(design, "format"));
    if (!json_is_array(reagents) || !json_is_object(wells) || (format != 96 && format != 384)) {
        snprintf(err, errlen, "the run has no design (reagents, wells, format 96|384) to dispense");
        return NULL;
    }
    int rows = format == 96 ? 8 : 16, cols = format == 96 ? 12 : 24;
    int passes = rows / channels > 1 ? rows / channels : 1, stride = passes;
    if (channels < 1 || channels > 16 || rows % channels != 0) {
        snprintf(err, errlen, "%d channels cannot serve the rows of a %d-well plate", channels,
                 format);
        return NULL;
    }
    json_t *prog = json_array();
    size_t ri;
    json_t *jr;
    json_array_foreach(reagents, ri, jr)
    {
        const char *reagent = json_string_value(jr);
        bool tipped = false;
        for (int c = 1; c <= cols; c++) {
            for (int pass = 0; pass < passes; pass++) {
                json_t *vols = json_array();
                bool any = false;
                for (int ch = 0; ch < channels; ch++) {
                    char well[16];
                    snprintf(well, sizeof well, "%c%d", 'A' + pass + ch * stride, c);
                    double ul = json_number_value(json_array_get(json_object_get(wells, well), ri));
                    ul = ul > 0 ? ul : 0;
                    any |= ul > 0;
                    json_array_append_new(vols, json_real(ul));
                }
                if (!any) {
                    json_decref(vols);
                    continue;
                }
                if (!tipped) {
                    json_array_append_new(
                        prog, dry_entry("pick_up_tips", json_pack("{s:i}", "channels", channels)));
                    tipped = true;
                }
                char first[16];
                snprintf(first, sizeof first, "%c%d", 'A' + pass, c);
                json_array_append_new(
                    prog, entry("aspirate", json_pack("{s:s,s:O}", "reagent", reagent ?: "",
                                                      "volume_ul", vols)));
                json_array_append_new(prog, entry("dispense", json_pack("{s:s,s:o}", "well", first,
                                                                        "volume_ul", vols)));
            }
        }
        if (tipped)
            json_array_append_new(prog, dry_entry("drop_tips", NULL));
    }
    return prog;
}

json_t *program_build(const char *op, lab_driver_t *d, const json_t *params, double duration_s,
                      int cassette, int slot, char *err, size_t errlen)
{
    json_t *prog;
    if (strcmp(op, "incubate") == 0) {
        json_t *temp = json_object_get(params, "temperature_c");
        prog = json_array();
        if (program_needs_site(op, d)) {
            if (json_is_number(temp) && program_has_action(d, "set_temperature"))
                json_array_append_new(
                    prog, entry("set_temperature", json_pack("{s:O}", "temperature_c", temp)));
            json_t *load =
                entry("load", json_pack("{s:i,s:i}", "cassette", cassette, "slot", slot));
            json_object_set_new(load, "mark", json_string("loaded"));
            json_array_append_new(prog, load);
            json_array_append_new(prog, json_pack("{s:f}", "wait_s", duration_s));
            json_t *unload =
                entry("unload", json_pack("{s:i,s:i}", "cassette", cassette, "slot", slot));
            json_object_set_new(unload, "mark", json_string("unloaded"));
            json_array_append_new(prog, unload);
        } else if (program_has_action(d, "set_temperature") && program_has_action(d, "run")) {
            if (json_is_number(temp))
                json_array_append_new(
                    prog, entry("set_temperature", json_pack("{s:O}", "temperature_c", temp)));
            json_array_append_new(prog, entry("run", NULL));
            json_array_append_new(prog, json_pack("{s:f}", "wait_s", duration_s));
            json_array_append_new(prog, entry("stop", NULL));
        } else {
            json_array_append_new(prog, json_pack("{s:f}", "wait_s", duration_s));
        }
        return prog;
    }
    if (strcmp(op, "dispense") == 0 && program_has_action(d, "pick_up_tips")) {
        json_t *design = json_object_get(params, "design");
        if (design) {
            json_t *ch = json_object_get(params, "channels");
            return design_program(design, ch ? (int)json_integer_value(ch) : 8, err, errlen);
        }
        return dispense_program(d, params, err, errlen);
    }
    if (program_has_action(d, op)) {
        json_t *e = entry(op, json_deep_copy(params ? params : json_object()));
        if (strncmp(op, "read", 4) == 0)
            json_object_set_new(e, "measure", json_true());
        prog = json_array();
        json_array_append_new(prog, e);
        return prog;
    }
    snprintf(err, errlen, "instrument %s (%s) has no action '%s'", lab_driver_id(d),
             lab_driver_ops(d)->name, op);
    return NULL;
}
