/* A day's load for the page benchmarks: copies of a run the daemon ran, written through the
 * store's operations (daemon/store/runs.h) so the rows are the daemon's own: the run document
 * at submission, then at its end with its readings, and the outbox rows each write appends.
 * Submitting 1,000 runs to a simulated cell and waiting for them would take the cell's time;
 * copying one real run takes seconds and stores the same shape of rows. */
#include "tests/bench/load_day.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "core/mem.h"
#include "daemon/store/runs.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS (24LL * 3600 * 1000)

typedef struct load {
    int pending; /* ops submitted, not yet done */
    int failed;  /* the first error, 0 when none */
    lab_store_t *st;
    bool closed;
} load_t;

/* Every ISO-8601 time in v (object members and array items, at any depth) moved by shift_ms. */
static void times_shift(json_t *v, int64_t shift_ms)
{
    const char *k;
    json_t *m;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, m)
        {
            int64_t t;
            if (json_is_string(m) && lab_time_parse(json_string_value(m), &t) == 0) {
                char buf[32];
                lab_time_iso(t + shift_ms, buf);
                json_object_set_new(v, k, json_string(buf));
            } else {
                times_shift(m, shift_ms);
            }
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            int64_t t;
            if (json_is_string(m) && lab_time_parse(json_string_value(m), &t) == 0) {
                char buf[32];
                lab_time_iso(t + shift_ms, buf);
                json_array_set_new(v, i, json_string(buf));
            } else {
                times_shift(m, shift_ms);
            }
        }
    }
}

/* The copy of a template document: its id, plate and times changed. */
static json_t *doc_copy(const json_t *tmpl, const char *id, const char *plate, int64_t shift_ms)
{
    json_t *doc = json_deep_copy(tmpl);
    times_shift(doc, shift_ms);
    json_object_set_new(doc, "id", json_string(id));
    json_object_set_new(doc, "plate", json_string(plate));
    return doc;
}

/* The measurement rows the scheduler appends when a read ends (daemon/sched/exec.c), rebuilt from
 * the finished document's readings: one per well. */
static void measurements_add(lab_run_update_t *upd, const json_t *doc, const char *id,
                             const char *plate)
{
    const json_t *readings = json_object_get(doc, "readings");
    const char *step, *well;
    json_t *one, *v;
    json_object_foreach((json_t *)readings, step, one)
    {
        const char *inst = "";
        const char *at = json_string_value(json_object_get(doc, "updated_at"));
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(doc, "steps"), i, s)
        {
            if (json_is_string(json_object_get(s, "name")) &&
                strcmp(json_string_value(json_object_get(s, "name")), step) == 0) {
                json_t *on = json_object_get(s, "instrument");
                inst = json_is_string(on) ? json_string_value(on) : inst;
                json_t *end = json_object_get(s, "ended_at");
                at = json_is_string(end) ? json_string_value(end) : at;
            }
        }
        const char *measure = json_string_value(json_object_get(one, "measure"));
        json_object_foreach(json_object_get(one, "values"), well, v)
        {
            json_t *row = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:O,s:s,s:s}", "run", id, "plate",
                                    plate, "step", step, "instrument", inst, "well", well,
                                    "measure", measure ? measure : "", "value", v, "unit",
                                    measure && strcmp(measure, "absorbance") == 0 ? "AU" : "", "at",
                                    at ? at : "");
            if (!row)
                continue;
            if (json_object_get(one, "wavelength_nm"))
                json_object_set(row, "wavelength_nm", json_object_get(one, "wavelength_nm"));
            lab_run_update_add_row(upd, "measurement", json_dumps(row, JSON_COMPACT));
            json_decref(row);
        }
    }
}

static load_t *load_of(void *arg)
{
    return (load_t *)arg;
}

static void insert_done(lab_store_op_t *op, int status)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)op;
    load_t *l = load_of(ins->arg);
    if (status < 0 && !l->failed)
        l->failed = status;
    l->pending--;
    lab_run_insert_free(ins);
}

static void update_done(lab_store_op_t *op, int status)
{
    lab_run_update_t *upd = (lab_run_update_t *)op;
    load_t *l = load_of(upd->arg);
    if (status < 0 && !l->failed)
        l->failed = status;
    l->pending--;
    lab_run_update_free(upd);
}

static void on_closed(void *arg)
{
    load_of(arg)->closed = true;
}

int load_day(const char *state_dir, const char *queued_doc, const char *done_doc, int n)
{
    uv_loop_t loop;
    load_t l = {0};
    json_t *q = json_loads(queued_doc, 0, NULL), *d = json_loads(done_doc, 0, NULL);
    int rc = LAB_EINVAL;
    if (!json_is_object(q) || !json_is_object(d) || n < 0)
        goto fail;
    if (uv_loop_init(&loop) != 0) {
        rc = LAB_EIO;
        goto fail;
    }
    rc = lab_store_open(&l.st, &loop, state_dir);
    if (rc < 0) {
        uv_loop_close(&loop);
        goto fail;
    }
    int64_t created = 0, ended = 0; /* the template's */
    if (lab_time_parse(json_string_value(json_object_get(q, "created_at")), &created) ||
        lab_time_parse(json_string_value(json_object_get(d, "updated_at")), &ended)) {
        rc = LAB_EINVAL;
        goto stop;
    }
    for (int i = 0; i < n; i++) {
        char id[LAB_UUID_LEN + 1], plate[32];
        lab_uuid4(id);
        snprintf(plate, sizeof plate, "LOAD-%04d", i);
        int64_t shift = -DAY_MS + DAY_MS * i / (n ? n : 1) - 60000; /* oldest first */
        json_t *qd = doc_copy(q, id, plate, shift), *dd = doc_copy(d, id, plate, shift);
        lab_run_insert_t *ins = lab_run_insert_new();
        ins->id = lab_strdup(id);
        ins->state = lab_strdup("queued");
        ins->doc = json_dumps(qd, JSON_COMPACT);
        ins->ts_ms = created + shift;
        ins->arg = &l;
        ins->op.done = insert_done;
        lab_run_update_t *upd = lab_run_update_new();
        upd->id = lab_strdup(id);
        upd->state = lab_strdup("done");
        upd->doc = json_dumps(dd, JSON_COMPACT);
        upd->ts_ms = ended + shift;
        upd->arg = &l;
        upd->op.done = update_done;
        measurements_add(upd, dd, id, plate);
        json_decref(qd);
        json_decref(dd);
        l.pending += 2;
        lab_store_submit(l.st, &ins->op);
        lab_store_submit(l.st, &upd->op);
        if (l.pending >= 512) /* a bounded queue: the store commits while more are built */
            while (l.pending > 64 && uv_run(&loop, UV_RUN_ONCE))
                ;
    }
    while (l.pending > 0 && uv_run(&loop, UV_RUN_ONCE))
        ;
    rc = l.pending ? LAB_EIO : l.failed;
stop:
    lab_store_close(l.st, on_closed, &l);
    while (!l.closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
fail:
    json_decref(q);
    json_decref(d);
    return rc;
}
