/* Plate checks: a step with "scan": true reads its plate's label before its own work, on the
 * barcode reader whose at = key names the step's instrument, and compares it with the run's
 * plate. A match goes on; another barcode, no read, or a reader that failed stops the step
 * before its own work and pauses the run with a prompt that says both barcodes (never a silent
 * pass). At such a pause resume with retry scans again and skip means "the plate is right": the
 * step runs without the check, the operator's word recorded in its scan. */
#include "daemon/sched/sched_int.h"
#include "core/log.h"
#include "core/text.h"

#include <stdio.h>
#include <string.h>

static const char *const outcome_names[] = {
    [SCAN_NONE] = "",          [SCAN_MATCH] = "match",   [SCAN_MISMATCH] = "mismatch",
    [SCAN_NOREAD] = "no_read", [SCAN_FAILED] = "failed", [SCAN_WAIVED] = "waived",
};

/* Whether the driver takes an at = key (only then may lab_drv_str ask for it). */
static bool has_at_key(lab_driver_t *d)
{
    for (const lab_drv_key_t *k = lab_driver_ops(d)->keys; k && k->name; k++)
        if (strcmp(k->name, "at") == 0)
            return true;
    return false;
}

int scan_reader(lab_sched_t *s, int inst)
{
    lab_driver_t *at = inst_at(s, inst);
    int found = -1;
    for (int i = 0; at && i < ninst(s); i++) {
        lab_driver_t *d = inst_at(s, i);
        if (i == inst || !program_action(d, LAB_DRV_ROLE_SCAN) || !has_at_key(d) ||
            strcmp(lab_drv_str(d, "at") ?: "", lab_driver_id(at)) != 0)
            continue;
        if (inst_available(s, i))
            return i; /* one that can read now, before one that cannot */
        if (found < 0)
            found = i;
    }
    return found;
}

bool scan_any_reader(lab_sched_t *s, const char *on)
{
    for (int i = 0; i < ninst(s); i++)
        if (inst_matches(s, i, on) && scan_reader(s, i) >= 0)
            return true;
    return false;
}

/* Printable ASCII of what a reader answered, for reasons and documents: a driver's result is
 * input from a device, and a reason is JSON text. */
static void shown(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (!in)
        return;
    for (; *in && n + 4 < cap; in++)
        out[n++] = (*in >= 0x20 && *in <= 0x7e) ? *in : '?';
    if (*in)
        memcpy(out + n, "...", 4);
    else
        out[n] = '\0';
}

bool scan_insert(lab_sched_t *s, srun_t *r, sstep_t *st, program_t *prog, char *err, size_t errlen)
{
    (void)r;
    if (!st->scan || st->scan_waived)
        return true;
    int reader = scan_reader(s, st->inst);
    if (reader < 0) {
        snprintf(err, errlen,
                 "plate check at %s: no barcode reader of this cell has at = %s; resume with skip "
                 "to go on without the check, or cancel",
                 lab_driver_id(inst_at(s, st->inst)), lab_driver_id(inst_at(s, st->inst)));
        return false;
    }
    program_insert(
        prog, 0,
        (program_entry_t){.kind = PROGRAM_ACTION,
                          .role = LAB_DRV_ROLE_SCAN,
                          .action = program_action(inst_at(s, reader), LAB_DRV_ROLE_SCAN),
                          .flags = PROGRAM_DRY,
                          .on = reader});
    return true;
}

/* The step ends before its own work and the run pauses with why: the recovery policy is not
 * asked (a retry policy would scan a wrong plate again, skip would pass it). */
void scan_stop(lab_sched_t *s, exec_t *ex, const char *why)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    s->stats.steps_failed++;
    lab_text_copy(st->error, sizeof st->error, why);
    lab_text_trim(st->error);
    (void)run_step_set(r, st, LAB_STEP_FAILED); /* refused: logged; the pause stands */
    st->end_ms = now_ms(s);
    st->scan_held = true;
    sites_release(s, st);
    log_warn("sched", "run=%s step=%s: %s", r->id, st->name, why);
    r->ex = NULL;
    exec_free(ex);
    recovery_pause(s, r, why);
}

static void scan_record(lab_sched_t *s, sstep_t *st, int reader, scan_outcome_t o, const char *read)
{
    st->scan_outcome = o;
    st->scan_reader = reader;
    st->scan_ms = now_ms(s);
    st->scan_has_read = read != NULL;
    shown(read, st->scan_read, sizeof st->scan_read);
}

bool scan_done(lab_sched_t *s, exec_t *ex, const program_entry_t *e, const lab_drv_error_t *err,
               json_t *result)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    const char *at = lab_driver_id(inst_at(s, st->inst)),
               *reader = lab_driver_id(inst_at(s, e->on));
    const char *plate = r->plate && r->plate[0] ? r->plate : NULL;
    json_t *b = json_object_get(result, "barcode");
    char why[1000], read[96];
    if (err->code == LAB_OK && !json_is_string(b) && !json_is_null(b)) {
        scan_record(s, st, e->on, SCAN_FAILED, NULL);
        snprintf(why, sizeof why,
                 "plate check at %s: the reader %s answered no barcode; check that the plate is "
                 "%.256s, then resume with skip if it is, retry to scan again, or cancel",
                 at, reader, plate ? plate : "the run's");
        scan_stop(s, ex, why);
        return false;
    }
    if (err->code != LAB_OK) {
        scan_record(s, st, e->on, SCAN_FAILED, NULL);
        snprintf(why, sizeof why,
                 "plate check at %s: the reader %s failed: %s (%.200s); resume with retry to scan "
                 "again, with skip if the plate is %.256s, or cancel",
                 at, reader, lab_err_json_name(err->code), err->text, plate ? plate : "the run's");
        lab_text_trim(why);
        scan_stop(s, ex, why);
        return false;
    }
    if (json_is_null(b)) {
        scan_record(s, st, e->on, SCAN_NOREAD, NULL);
        snprintf(why, sizeof why,
                 "label unreadable at %s (reader %s): check that the plate is %.256s, then resume "
                 "with skip if it is, retry to scan again, or cancel",
                 at, reader, plate ? plate : "the run's");
        scan_stop(s, ex, why);
        return false;
    }
    const char *got = json_string_value(b);
    shown(got, read, sizeof read);
    if (plate && strcmp(got, plate) == 0) {
        scan_record(s, st, e->on, SCAN_MATCH, got);
        log_info("sched", "run=%s step=%s plate check at %s: %s read by %s", r->id, st->name, at,
                 read, reader);
        return true;
    }
    scan_record(s, st, e->on, SCAN_MISMATCH, got);
    if (plate)
        snprintf(why, sizeof why,
                 "plate check at %s: expected %.256s, the reader %s read %s; put %.256s there and "
                 "resume with retry, resume with skip if the plate is right after all, or cancel",
                 at, plate, reader, read, plate);
    else
        snprintf(why, sizeof why,
                 "plate check at %s: the run names no plate, the reader %s read %s; resume with "
                 "skip to go on without the check, or cancel",
                 at, reader, read);
    lab_text_trim(why);
    scan_stop(s, ex, why);
    return false;
}

bool scan_waive(sstep_t *st, const char *by)
{
    if (!st->scan_held)
        return false;
    st->scan_held = false;
    st->scan_waived = true;
    st->scan_outcome = SCAN_WAIVED;
    lab_text_copy(st->scan_by, sizeof st->scan_by, by ? by : "");
    return true;
}

json_t *scan_json(lab_sched_t *s, const sstep_t *st)
{
    if (!st->scan || st->scan_outcome == SCAN_NONE)
        return NULL;
    json_t *o = json_pack("{s:s,s:b}", "outcome", outcome_names[st->scan_outcome], "matched",
                          st->scan_outcome == SCAN_MATCH);
    json_object_set_new(o, "read", st->scan_has_read ? json_string(st->scan_read) : json_null());
    lab_driver_t *d = inst_at(s, st->scan_reader);
    if (d)
        json_object_set_new(o, "reader", json_string(lab_driver_id(d)));
    doc_put_time(o, "at", st->scan_ms);
    if (st->scan_outcome == SCAN_WAIVED && st->scan_by[0])
        json_object_set_new(o, "by", json_string(st->scan_by));
    return o;
}

void scan_from_json(lab_sched_t *s, sstep_t *st, const json_t *o)
{
    const char *name = json_string_value(json_object_get(o, "outcome"));
    st->scan_outcome = SCAN_NONE;
    for (int i = 0; name && i < (int)(sizeof outcome_names / sizeof outcome_names[0]); i++)
        if (i != SCAN_NONE && strcmp(outcome_names[i], name) == 0)
            st->scan_outcome = (scan_outcome_t)i;
    json_t *read = json_object_get(o, "read");
    st->scan_has_read = json_is_string(read);
    shown(json_string_value(read), st->scan_read, sizeof st->scan_read);
    st->scan_reader = inst_index(s, json_string_value(json_object_get(o, "reader")));
    st->scan_ms = doc_get_time(o, "at");
    lab_text_copy(st->scan_by, sizeof st->scan_by, json_string_value(json_object_get(o, "by")));
    st->scan_waived = st->scan_outcome == SCAN_WAIVED;
    /* a step that stopped at its check waits for the operator's word, after a restart too */
    st->scan_held = st->state == LAB_STEP_FAILED &&
                    (st->scan_outcome == SCAN_MISMATCH || st->scan_outcome == SCAN_NOREAD ||
                     st->scan_outcome == SCAN_FAILED);
}
