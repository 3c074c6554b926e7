/* The recovery policy of a failed step (the step's on_failure, else the workflow's): retry, skip,
 * fail, or pause the run for an operator; a step that may not be repeated and may have happened
 * always pauses. */
#include "daemon/sched/sched_int.h"
#include "core/text.h"

#include <stdio.h>
#include <string.h>

void recovery_pause(lab_sched_t *s, srun_t *r, const char *why)
{
    run_set_state(s, r, LAB_RUN_PAUSED);
    json_object_set_new(r->doc, "paused_reason", json_string(why));
    snprintf(r->why, sizeof r->why, "paused: %s", why);
    lab_text_trim(r->why);
    run_persist(s, r, NULL, NULL);
    replan_now(s);
}

/* done: what the failed attempt's program did before it failed ("" or NULL: nothing known). */
void recovery_apply(lab_sched_t *s, srun_t *r, int k, bool unknown_outcome, const char *done)
{
    const char *sep = done && done[0] ? "; " : "";
    if (!done)
        done = "";
    sstep_t *st = &r->st[k];
    const char *action = json_string_value(json_object_get(st->policy, "action"));
    int retries = (int)json_integer_value(json_object_get(st->policy, "retries"));
    if (!action)
        action = "pause";
    if (unknown_outcome && !program_repeatable(st->op)) {
        char why[1000];
        snprintf(why, sizeof why,
                 "step %s (%s) may or may not have happened (%s%s%s); check the plate, then resume "
                 "with retry (it did not happen) or skip (it did)",
                 st->name, st->op, done, sep, st->error);
        recovery_pause(s, r, why);
        return;
    }
    if (strcmp(action, "retry") == 0 && st->attempts <= (retries > 0 ? retries : 1) &&
        run_step_set(r, st, LAB_STEP_PENDING) == 0) {
        run_set_state(s, r, LAB_RUN_RUNNING);
        run_persist(s, r, NULL, NULL);
        replan_now(s);
        return;
    }
    if (strcmp(action, "skip") == 0 && run_step_set(r, st, LAB_STEP_SKIPPED) == 0) {
        if (!st->end_ms)
            st->end_ms = now_ms(s);
        r->cur = k + 1;
        if (r->cur >= r->n) {
            run_finish(s, r, LAB_RUN_DONE, NULL, NULL);
        } else {
            run_set_state(s, r, LAB_RUN_RUNNING);
            run_persist(s, r, NULL, NULL);
        }
        replan_now(s);
        return;
    }
    if (strcmp(action, "pause") == 0) {
        char why[1000];
        snprintf(why, sizeof why, "step %s failed: %s%s%s; resume with retry or skip, or cancel",
                 st->name, done, sep, st->error);
        recovery_pause(s, r, why);
        return;
    }
    /* fail, or retries used up */
    json_object_set_new(r->doc, "failure",
                        json_pack("{s:s,s:s}", "step", st->name, "error", st->error));
    run_finish(s, r, LAB_RUN_FAILED, NULL, NULL);
    replan_now(s);
}
