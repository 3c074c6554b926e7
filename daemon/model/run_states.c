/* Run states and the run document. */
#include "daemon/model/run_states.h"
#include "core/clock.h"
#include "core/fsm.h"

#include <string.h>

static const char *const state_names[LAB_RUN_NSTATES] = {
    [LAB_RUN_QUEUED] = "queued",           [LAB_RUN_PLANNED] = "planned",
    [LAB_RUN_RUNNING] = "running",         [LAB_RUN_PAUSED] = "paused",
    [LAB_RUN_INTERRUPTED] = "interrupted", [LAB_RUN_DONE] = "done",
    [LAB_RUN_FAILED] = "failed",           [LAB_RUN_CANCELLED] = "cancelled",
    [LAB_RUN_RELEASED] = "released",
};

/* Rows marked "not taken" are allowed but no code moves a run that way today: they were in the
 * table before it carried events, and taking them out would change what a stored run may do. */
static const lab_fsm_edge_t edges[] = {
    {LAB_RUN_QUEUED, LAB_RUN_PLANNED, "the planner placed every step"},
    {LAB_RUN_QUEUED, LAB_RUN_CANCELLED, "cancel"},
    {LAB_RUN_QUEUED, LAB_RUN_PAUSED, "not taken"},
    {LAB_RUN_PLANNED, LAB_RUN_QUEUED, "not taken"},
    {LAB_RUN_PLANNED, LAB_RUN_RUNNING, "its first step starts"},
    {LAB_RUN_PLANNED, LAB_RUN_CANCELLED, "cancel"},
    {LAB_RUN_QUEUED, LAB_RUN_RELEASED,
     "the lab's queue gave it to another cell, or this cell stops"},
    {LAB_RUN_PLANNED, LAB_RUN_RELEASED,
     "the lab's queue gave it to another cell, or this cell stops"},
    {LAB_RUN_PLANNED, LAB_RUN_PAUSED, "not taken"},
    {LAB_RUN_PLANNED, LAB_RUN_FAILED, "not taken"},
    {LAB_RUN_RUNNING, LAB_RUN_DONE, "its last step is done or skipped"},
    {LAB_RUN_RUNNING, LAB_RUN_FAILED, "a step failed, its policy says fail or retries are used up"},
    {LAB_RUN_RUNNING, LAB_RUN_CANCELLED, "cancel"},
    {LAB_RUN_RUNNING, LAB_RUN_PAUSED,
     "a step failed and its policy pauses, or its outcome is "
     "unknown"},
    {LAB_RUN_RUNNING, LAB_RUN_INTERRUPTED, "the daemon restarted while a step ran"},
    {LAB_RUN_PAUSED, LAB_RUN_QUEUED, "resume, no step begun yet"},
    {LAB_RUN_PAUSED, LAB_RUN_RUNNING, "resume (retry or skip)"},
    {LAB_RUN_PAUSED, LAB_RUN_CANCELLED, "cancel"},
    {LAB_RUN_PAUSED, LAB_RUN_DONE, "resume with skip of the last step"},
    {LAB_RUN_PAUSED, LAB_RUN_FAILED, "not taken"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_QUEUED, "not taken"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_RUNNING, "recovery policy retries or skips the step"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_FAILED, "recovery policy says fail"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_CANCELLED, "cancel"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_PAUSED, "recovery: the step may or may not have happened"},
    {LAB_RUN_INTERRUPTED, LAB_RUN_DONE, "recovery skips the last step"},
};

const lab_fsm_t lab_run_fsm = {
    .name = "run",
    .nstates = LAB_RUN_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 1u << LAB_RUN_DONE | 1u << LAB_RUN_FAILED | 1u << LAB_RUN_CANCELLED |
             1u << LAB_RUN_RELEASED,
};

const char *lab_run_state_name(lab_run_state_t s)
{
    return lab_fsm_state_name(&lab_run_fsm, (int)s);
}

int lab_run_state_parse(const char *name)
{
    return lab_fsm_state_parse(&lab_run_fsm, name);
}

bool lab_run_transition_ok(lab_run_state_t from, lab_run_state_t to)
{
    return lab_fsm_edge(&lab_run_fsm, (int)from, (int)to) != NULL;
}

bool lab_run_state_final(lab_run_state_t s)
{
    return lab_fsm_final(&lab_run_fsm, (int)s);
}

int lab_run_set_state(lab_run_state_t *state, lab_run_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_run_fsm, &cur, (int)to, id);
    *state = (lab_run_state_t)cur;
    return rc;
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
