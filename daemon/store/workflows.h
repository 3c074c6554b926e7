/* Workflow versions in the local store, and the "workflow" outbox rows (PostgreSQL
 * labloop.workflows). A stored version never changes: runs name the version they follow. */
#ifndef LAB_STORE_WORKFLOWS_H
#define LAB_STORE_WORKFLOWS_H

#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>

/* Stores a workflow. version 0: the newest stored version with the same canonical text, else a
 * new version (newest + 1). version N: that version when it holds the same text, LAB_ECONFLICT
 * when it holds another, else stored as N. The caller sets op.done and submits &put->op. */
typedef struct lab_wf_put {
    lab_store_op_t op;
    /* inputs, owned (lab_wf_put_free) */
    char *name;
    int version;
    char *canon; /* lab_workflow_canonical */
    int64_t ts_ms;
    void *arg; /* the caller's, for its done */
    /* outputs */
    int stored_version;
    bool created;
    char *doc; /* the stored document (with its version), malloc'd */
} lab_wf_put_t;

lab_wf_put_t *lab_wf_put_new(void);
void lab_wf_put_free(lab_wf_put_t *put);

/* Loop thread. version 0: the newest. *doc malloc'd. LAB_ENOTFOUND when absent. */
int lab_workflows_get(lab_store_t *st, const char *name, int version, char **doc);
/* The outbox seq of the newest stored version of name (read connection), 0 when none. */
int64_t lab_workflows_seq(lab_store_t *st, const char *name);
/* Loop thread: [{"name", "versions": [1, 2], "latest": 2}], by name. */
json_t *lab_workflows_list(lab_store_t *st);

#endif
