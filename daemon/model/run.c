/* Run states and the run document. */
#include "daemon/model/run.h"
#include "core/clock.h"

#include <string.h>

static const char *const state_names[LAB_RUN_NSTATES] = {
    [LAB_RUN_QUEUED] = "queued",           [LAB_RUN_PLANNED] = "planned",
    [LAB_RUN_RUNNING] = "running",         [LAB_RUN_PAUSED] = "paused",
    [LAB_RUN_INTERRUPTED] = "interrupted", [LAB_RUN_DONE] = "done",
    [LAB_RUN_FAILED] = "failed",           [LAB_RUN_CANCELLED] = "cancelled",
};

#define B(s) (1u << (s))
/* allowed[from] = set of states it may move to */
static const unsigned allowed[LAB_RUN_NSTATES] = {
    [LAB_RUN_QUEUED] = B(LAB_RUN_PLANNED) | B(LAB_RUN_CANCELLED) | B(LAB_RUN_PAUSED),
    [LAB_RUN_PLANNED] = B(LAB_RUN_QUEUED) | B(LAB_RUN_RUNNING) | B(LAB_RUN_CANCELLED) |
                        B(LAB_RUN_PAUSED) | B(LAB_RUN_FAILED),
    [LAB_RUN_RUNNING] = B(LAB_RUN_DONE) | B(LAB_RUN_FAILED) | B(LAB_RUN_CANCELLED) |
                        B(LAB_RUN_PAUSED) | B(LAB_RUN_INTERRUPTED),
    [LAB_RUN_PAUSED] = B(LAB_RUN_QUEUED) | B(LAB_RUN_RUNNING) | B(LAB_RUN_CANCELLED) |
                       B(LAB_RUN_DONE) | B(LAB_RUN_FAILED),
    [LAB_RUN_INTERRUPTED] = B(LAB_RUN_QUEUED) | B(LAB_RUN_RUNNING) | B(LAB_RUN_FAILED) |
                            B(LAB_RUN_CANCELLED) | B(LAB_RUN_PAUSED) | B(LAB_RUN_DONE),
    [LAB_RUN_DONE] = 0,
    [LAB_RUN_FAILED] = 0,
    [LAB_RUN_CANCELLED] = 0,
};

const char *lab_run_state_name(lab_run_state_t s)
{
    return (unsigned)s < LAB_RUN_NSTATES ? state_names[s] : "?";
}

int lab_run_state_parse(const char *name)
{
    for (int i = 0; i < LAB_RUN_NSTATES; i++)
        if (strcmp(state_names[i], name) == 0)
            return i;
    return -1;
}

bool lab_run_transition_ok(lab_run_state_t from, lab_run_state_t to)
{
    return (unsigned)from < LAB_RUN_NSTATES && (unsigned)to < LAB_RUN_NSTATES &&
           (allowed[from] & B(to));
}

bool lab_run_state_final(lab_run_state_t s)
{
    return s == LAB_RUN_DONE || s == LAB_RUN_FAILED || s == LAB_RUN_CANCELLED;
}

json_t *lab_run_new_doc(const json_t *submission, const char *id, const char *origin,
                        const char *submitted_by, int64_t now_ms)
{
    char ts[32];
    lab_time_iso(now_ms, ts);
    json_t *doc = json_deep_copy(submission);
    if (!json_object_get(doc, "priority"))
        json_object_set_new(doc, "priority", json_string("normal"));
    if (!json_object_get(doc, "score"))
        json_object_set_new(doc, "score", json_real(0.0));
    if (!json_object_get(doc, "params"))
        json_object_set_new(doc, "params", json_object());
    json_object_set_new(doc, "id", json_string(id));
    json_object_set_new(doc, "state", json_string(lab_run_state_name(LAB_RUN_QUEUED)));
    json_object_set_new(doc, "origin", json_string(origin));
    json_object_set_new(doc, "submitted_by", json_string(submitted_by));
    json_object_set_new(doc, "created_at", json_string(ts));
    json_object_set_new(doc, "updated_at", json_string(ts));
    return doc;
}
