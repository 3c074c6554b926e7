/* manual-mover: a person moves plates between instruments. `move` asks for the move (the
 * request is in the instrument's info as pending_move, for the dashboard and `labloop
 * instruments`) and ends when someone confirms it with `confirm`, or times out. There is no
 * connection: the instrument is idle as soon as it starts. */
#include "drivers/driver.h"

#include <string.h>

typedef struct manual {
    json_t *pending; /* the move awaiting confirmation */
} manual_t;

static const lab_drv_action_t manual_actions[] = {
    {"move",
     "{\"type\":\"object\",\"required\":[\"from\",\"to\"],\"additionalProperties\":false,"
     "\"properties\":{\"plate\":{\"type\":\"string\",\"maxLength\":128},"
     "\"from\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"
     "\"to\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":128},"
     "\"note\":{\"type\":\"string\",\"maxLength\":512}}}",
     3600, 0, "ask a person to move a plate from one instrument to another; ends on confirm"},
    {"confirm",
     "{\"type\":\"object\",\"additionalProperties\":false,"
     "\"properties\":{\"by\":{\"type\":\"string\",\"maxLength\":128}}}",
     10, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE | LAB_DRV_ACT_BY,
     "confirm that the requested move is done"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t manual_keys[] = {{NULL, 0, NULL, 0, 0, NULL, 0, NULL}};

static void manual_start(lab_driver_t *d)
{
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
}

static void manual_forget(lab_driver_t *d)
{
    manual_t *m = lab_drv_priv(d);
    json_decref(m->pending);
    m->pending = NULL;
    lab_drv_set_info(d, "pending_move", json_null());
}

static void manual_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    manual_t *m = lab_drv_priv(d);
    lab_drv_error_t err;
    if (strcmp(a->name, "move") == 0) {
        m->pending = json_deep_copy(params);
        lab_drv_set_info(d, "pending_move", json_deep_copy(params));
        return; /* ends on confirm */
    }
    /* confirm: immediate; the move is the operation in progress. */
    if (!m->pending) {
        lab_drv_done(d, lab_drv_error_set(&err, LAB_ESTATE, NULL, "no move is waiting"), NULL);
        return;
    }
    json_t *moved = m->pending;
    m->pending = NULL;
    json_t *by = json_object_get(params, "by");
    if (by)
        json_object_set(moved, "confirmed_by", by);
    json_t *confirm = json_pack("{s:O}", "confirmed", moved);
    lab_drv_done(d, NULL, confirm); /* answers confirm (the immediate action) */
    lab_drv_set_info(d, "pending_move", json_null());
    lab_drv_done(d, NULL, moved); /* and ends the move */
}

static void manual_abort(lab_driver_t *d)
{
    manual_forget(d);
}

static void manual_stop(lab_driver_t *d)
{
    manual_forget(d);
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t manual_roles[] = {
    {LAB_DRV_ROLE_MOVE_PLATE, "move"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_manual_mover = {
    .name = "manual-mover",
    .kind = "mover",
    .model = "a person, asked and confirming",
    .keys = manual_keys,
    .actions = manual_actions,
    .roles = manual_roles,
    .start = manual_start,
    .stop = manual_stop,
    .invoke = manual_invoke,
    .abort = manual_abort,
    .priv_size = sizeof(manual_t),
};
