/* Workflow rules beyond the schema, and the canonical text that says whether two are one. */
#include "daemon/model/workflow_rules.h"
#include "core/mem.h"

#include <stdio.h>
#include <string.h>

int lab_workflow_check(const json_t *wf, lab_workflow_known_fn known, void *ctx, lab_jerrs_t *errs)
{
    int before = errs->n;
    json_t *steps = json_object_get(wf, "steps");
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
    {
        char at[64];
        const char *name = json_string_value(json_object_get(s, "name"));
        for (size_t j = 0; name && j < i; j++) {
            const char *other =
                json_string_value(json_object_get(json_array_get(steps, j), "name"));
            if (other && strcmp(other, name) == 0) {
                snprintf(at, sizeof at, "/steps/%zu/name", i);
                lab_jerrs_add(errs, at, "'%s' is already the name of step %zu", name, j);
                break;
            }
        }
        json_t *dur = json_object_get(s, "duration_s");
        if (json_is_array(dur) &&
            json_number_value(json_array_get(dur, 0)) > json_number_value(json_array_get(dur, 1))) {
            snprintf(at, sizeof at, "/steps/%zu/duration_s", i);
            lab_jerrs_add(errs, at, "the range's minimum %g is above its maximum %g",
                          json_number_value(json_array_get(dur, 0)),
                          json_number_value(json_array_get(dur, 1)));
        }
        json_t *after = json_object_get(s, "start_after_s"),
               *within = json_object_get(s, "start_within_s");
        if (i == 0 && (after || within)) {
            snprintf(at, sizeof at, "/steps/0/%s", after ? "start_after_s" : "start_within_s");
            lab_jerrs_add(errs, at, "the first step has no previous step to lag behind");
        } else if (after && within && json_number_value(after) > json_number_value(within)) {
            snprintf(at, sizeof at, "/steps/%zu/start_within_s", i);
            lab_jerrs_add(errs, at, "%g is below start_after_s %g: no start time can satisfy both",
                          json_number_value(within), json_number_value(after));
        }
        const char *on = json_string_value(json_object_get(s, "on"));
        if (known && on && !known(ctx, on)) {
            snprintf(at, sizeof at, "/steps/%zu/on", i);
            lab_jerrs_add(errs, at, "no instrument of this cell is '%s' (a kind or an id)", on);
        }
    }
    return errs->n - before;
}

char *lab_workflow_canonical(const json_t *wf)
{
    json_t *copy = json_deep_copy(wf);
    json_object_del(copy, "version");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    return text ? text : lab_strdup("{}");
}
