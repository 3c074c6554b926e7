/* Workflows (assay protocols): what the schema (schemas/json/workflow.schema.json) cannot check,
 * and the canonical form that says whether two documents are the same version. */
#ifndef LAB_MODEL_WORKFLOW_RULES_H
#define LAB_MODEL_WORKFLOW_RULES_H

#include "core/jschema.h"

#include <jansson.h>
#include <stdbool.h>

/* Whether `on` names something the cell has (an instrument kind or id). */
typedef bool (*lab_workflow_known_fn)(void *ctx, const char *on);

/* A schema-valid workflow's other rules: step names unique, a duration range [min, max] with
 * min <= max, start_after_s <= start_within_s, no lags on the first step (it has no previous
 * step), `on` known (when known is given). Appends each problem with its JSON Pointer; returns
 * how many. */
int lab_workflow_check(const json_t *wf, lab_workflow_known_fn known, void *ctx, lab_jerrs_t *errs);

/* The document without "version", keys sorted, compact: equal texts are the same workflow. */
char *lab_workflow_canonical(const json_t *wf);

#endif
