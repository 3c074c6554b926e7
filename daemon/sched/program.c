/* Step programs: how a workflow step's op becomes typed entries of driver actions on the
 * instrument it was planned on. A driver's abilities come from the roles it gives its actions
 * (lab_driver_ops_t.roles); the ops named here are the workflow language's. */
#include "daemon/sched/program.h"
#include "core/mem.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* The driver's own name of an action (static, outlives any program), or NULL. */
static const char *action_named(lab_driver_t *d, const char *name)
{
    for (const lab_drv_action_t *a = lab_driver_ops(d)->actions; a && a->name; a++)
        if (strcmp(a->name, name) == 0)
            return a->name;
    return NULL;
}

const char *program_action(lab_driver_t *d, lab_drv_role_t role)
{
    for (const lab_drv_role_action_t *r = lab_driver_ops(d)->roles; r && r->role; r++)
        if (r->role == role)
            return action_named(d, r->action);
    return NULL;
}

bool program_action_is(lab_driver_t *d, const char *action, lab_drv_role_t role)
{
    for (const lab_drv_role_action_t *r = lab_driver_ops(d)->roles; r && r->role; r++)
        if (r->role == role && strcmp(r->action, action) == 0)
            return true;
    return false;
}

bool program_has_action(lab_driver_t *d, const char *name)
{
    return action_named(d, name) != NULL;
}

bool program_needs_site(const char *op, lab_driver_t *d)
{
    return strcmp(op, "incubate") == 0 && lab_driver_sites(d) > 0 &&
           program_action(d, LAB_DRV_ROLE_LOAD) && program_action(d, LAB_DRV_ROLE_UNLOAD);
}

bool program_repeatable(const char *op)
{
    return strcmp(op, "dispense") != 0 && strcmp(op, "aspirate") != 0 &&
           strcmp(op, "transfer") != 0;
}

program_t *program_new(void)
{
    return LAB_NEW(program_t);
}

void program_free(program_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        json_decref(p->v[i].params);
    free(p->v);
    free(p);
}

void program_insert(program_t *p, size_t at, program_entry_t e)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->v = lab_realloc(p->v, sizeof *p->v * p->cap);
    }
    if (at > p->n)
        at = p->n;
    memmove(&p->v[at + 1], &p->v[at], sizeof *p->v * (p->n - at));
    if (!e.params)
        e.params = json_object();
    p->v[at] = e;
    p->n++;
}

size_t program_first_wait(const program_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].kind == PROGRAM_WAIT)
            return i;
    return p->n;
}

/* An action of d's by role (params taken over; NULL: none). */
static void add_role(program_t *p, lab_driver_t *d, lab_drv_role_t role, json_t *params,
                     unsigned flags, program_mark_t mark)
{
    program_insert(p, p->n,
                   (program_entry_t){.kind = PROGRAM_ACTION,
                                     .role = role,
                                     .action = program_action(d, role),
                                     .params = params,
                                     .mark = mark,
                                     .flags = flags,
                                     .on = -1});
}

static void add_wait(program_t *p, double s)
{
    program_insert(p, p->n, (program_entry_t){.kind = PROGRAM_WAIT, .on = -1, .wait_s = s});
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
static program_t *dispense_program(lab_driver_t *d, const json_t *params, char *err, size_t errlen)
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
    program_t *prog = program_new();
    add_role(prog, d, LAB_DRV_ROLE_PICK_UP_TIPS, json_pack("{s:i}", "channels", r1 - r0 + 1),
             PROGRAM_DRY, PROGRAM_MARK_NONE);
    for (int c = c0; c <= c1; c++) {
        char well[16];
        snprintf(well, sizeof well, "%c%d", 'A' + r0, c);
        add_role(prog, d, LAB_DRV_ROLE_ASPIRATE,
                 json_pack("{s:s,s:f}", "reagent", reagent, "volume_ul", ul), 0, PROGRAM_MARK_NONE);
        add_role(prog, d, LAB_DRV_ROLE_DISPENSE,
                 json_pack("{s:s,s:f}", "well", well, "volume_ul", ul), 0, PROGRAM_MARK_NONE);
    }
    add_role(prog, d, LAB_DRV_ROLE_DROP_TIPS, NULL, PROGRAM_DRY, PROGRAM_MARK_NONE);
    return prog;
}

/* A campaign plate's dispense: per reagent of the design, fresh tips on every channel, then per
 * column an aspirate of each channel's own volume and a dispense down the column (on a 384-well
 * plate the channels reach every other row, so two passes per column). Columns that get none of
 * the reagent are left out. design = {"format": 96|384, "reagents": [NAME...],
 * "wells": {WELL: [uL per reagent]}}. */
static program_t *design_program(lab_driver_t *d, const json_t *design, int channels, char *err,
                                 size_t errlen)
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
    program_t *prog = program_new();
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
                    add_role(prog, d, LAB_DRV_ROLE_PICK_UP_TIPS,
                             json_pack("{s:i}", "channels", channels), PROGRAM_DRY,
                             PROGRAM_MARK_NONE);
                    tipped = true;
                }
                char first[16];
                snprintf(first, sizeof first, "%c%d", 'A' + pass, c);
                add_role(prog, d, LAB_DRV_ROLE_ASPIRATE,
                         json_pack("{s:s,s:O}", "reagent", reagent ?: "", "volume_ul", vols), 0,
                         PROGRAM_MARK_NONE);
                add_role(prog, d, LAB_DRV_ROLE_DISPENSE,
                         json_pack("{s:s,s:o}", "well", first, "volume_ul", vols), 0,
                         PROGRAM_MARK_NONE);
            }
        }
        if (tipped)
            add_role(prog, d, LAB_DRV_ROLE_DROP_TIPS, NULL, PROGRAM_DRY, PROGRAM_MARK_NONE);
    }
    return prog;
}

/* An incubation: into a site and out after the time, or a device that holds the temperature
 * while it runs, or a plain wait where neither is known. */
static program_t *incubate_program(lab_driver_t *d, const json_t *params, double duration_s,
                                   int cassette, int slot)
{
    json_t *temp = json_object_get(params, "temperature_c");
    bool set_temp = json_is_number(temp) && program_action(d, LAB_DRV_ROLE_SET_TEMP);
    program_t *prog = program_new();
    if (program_needs_site("incubate", d)) {
        if (set_temp)
            add_role(prog, d, LAB_DRV_ROLE_SET_TEMP, json_pack("{s:O}", "temperature_c", temp), 0,
                     PROGRAM_MARK_NONE);
        add_role(prog, d, LAB_DRV_ROLE_LOAD,
                 json_pack("{s:i,s:i}", "cassette", cassette, "slot", slot), 0,
                 PROGRAM_MARK_LOADED);
        add_wait(prog, duration_s);
        add_role(prog, d, LAB_DRV_ROLE_UNLOAD,
                 json_pack("{s:i,s:i}", "cassette", cassette, "slot", slot), 0,
                 PROGRAM_MARK_UNLOADED);
    } else if (program_action(d, LAB_DRV_ROLE_SET_TEMP) && program_action(d, LAB_DRV_ROLE_RUN) &&
               program_action(d, LAB_DRV_ROLE_STOP)) {
        if (set_temp)
            add_role(prog, d, LAB_DRV_ROLE_SET_TEMP, json_pack("{s:O}", "temperature_c", temp), 0,
                     PROGRAM_MARK_NONE);
        add_role(prog, d, LAB_DRV_ROLE_RUN, NULL, 0, PROGRAM_MARK_NONE);
        add_wait(prog, duration_s);
        add_role(prog, d, LAB_DRV_ROLE_STOP, NULL, 0, PROGRAM_MARK_NONE);
    } else {
        add_wait(prog, duration_s);
    }
    return prog;
}

program_t *program_build(const char *op, lab_driver_t *d, const json_t *params, double duration_s,
                         int cassette, int slot, char *err, size_t errlen)
{
    if (strcmp(op, "incubate") == 0)
        return incubate_program(d, params, duration_s, cassette, slot);
    if (strcmp(op, "dispense") == 0 && program_action(d, LAB_DRV_ROLE_PICK_UP_TIPS) &&
        program_action(d, LAB_DRV_ROLE_DROP_TIPS) && program_action(d, LAB_DRV_ROLE_ASPIRATE) &&
        program_action(d, LAB_DRV_ROLE_DISPENSE)) {
        json_t *design = json_object_get(params, "design");
        if (design) {
            json_t *ch = json_object_get(params, "channels");
            return design_program(d, design, ch ? (int)json_integer_value(ch) : 8, err, errlen);
        }
        return dispense_program(d, params, err, errlen);
    }
    if (program_has_action(d, op)) { /* the op names one of the driver's actions */
        program_t *prog = program_new();
        bool read = program_action_is(d, op, LAB_DRV_ROLE_READ);
        program_insert(prog, 0,
                       (program_entry_t){.kind = PROGRAM_ACTION,
                                         .role = read ? LAB_DRV_ROLE_READ : LAB_DRV_ROLE_NONE,
                                         .action = action_named(d, op),
                                         .params = params ? json_deep_copy(params) : json_object(),
                                         .flags = read ? PROGRAM_MEASURE : 0,
                                         .on = -1});
        return prog;
    }
    snprintf(err, errlen, "instrument %s (%s) has no action '%s'", lab_driver_id(d),
             lab_driver_ops(d)->name, op);
    return NULL;
}

void program_entry_text(const program_entry_t *e, bool done, char *buf, size_t cap)
{
    const char *action = e->action ?: "?";
    const json_t *v = json_object_get(e->params, "volume_ul");
    char vol[48] = "";
    if (json_is_number(v))
        snprintf(vol, sizeof vol, "%g µL", json_number_value(v));
    else if (json_is_array(v))
        snprintf(vol, sizeof vol, "µL per channel");
    const char *reagent = json_string_value(json_object_get(e->params, "reagent"));
    const char *well = json_string_value(json_object_get(e->params, "well"));
    const char *from = reagent ? reagent : well ? well : "?";
    switch (e->role) {
    case LAB_DRV_ROLE_PICK_UP_TIPS:
        snprintf(buf, cap, "%s", done ? "tips picked up" : "pick up tips");
        break;
    case LAB_DRV_ROLE_DROP_TIPS:
        snprintf(buf, cap, "%s", done ? "tips dropped" : "drop tips");
        break;
    case LAB_DRV_ROLE_ASPIRATE:
        snprintf(buf, cap, "%s %s from %.64s", done ? "aspirated" : "aspirate", vol, from);
        break;
    case LAB_DRV_ROLE_DISPENSE:
        snprintf(buf, cap, "%s %s into %.64s", done ? "dispensed" : "dispense", vol,
                 well ? well : "?");
        break;
    default:
        snprintf(buf, cap, "%.64s%s", action, done ? " done" : "");
    }
}

int program_needs(const program_t *p, json_t *volumes_ul)
{
    int tips = 0, fitted = 1;
    for (size_t i = 0; i < p->n; i++) {
        const program_entry_t *e = &p->v[i];
        if (e->kind != PROGRAM_ACTION || e->on >= 0)
            continue; /* a wait, or the plate's move on another instrument */
        if (e->role == LAB_DRV_ROLE_PICK_UP_TIPS) {
            json_t *ch = json_object_get(e->params, "channels");
            fitted = json_is_integer(ch) ? (int)json_integer_value(ch) : 1;
            tips += fitted;
            continue;
        }
        const char *reagent = json_string_value(json_object_get(e->params, "reagent"));
        if (e->role != LAB_DRV_ROLE_ASPIRATE || !reagent)
            continue;
        json_t *v = json_object_get(e->params, "volume_ul");
        double ul = 0;
        if (json_is_number(v)) { /* one volume for each channel with a tip */
            ul = json_number_value(v) * (json_object_get(e->params, "channel") ? 1 : fitted);
        } else {
            size_t k;
            json_t *x;
            json_array_foreach(v, k, x) if (json_number_value(x) > 0) ul += json_number_value(x);
        }
        json_t *sum = json_object_get(volumes_ul, reagent);
        json_object_set_new(volumes_ul, reagent, json_real(json_number_value(sum) + ul));
    }
    return tips;
}
