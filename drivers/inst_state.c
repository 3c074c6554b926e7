/* The instrument state machine: the one table of moves between the states the daemon sees
 * (lab_driver_state, on_state). The framework derives that state from what the driver reports
 * (offline, idle, fault through lab_drv_set_state) and what it knows itself (an operation running:
 * busy; an operator holding the queue: paused), and publishes it once per kick, so one published
 * move may stand for several things that happened in the same turn of the loop (connected and
 * started the first operation: offline -> busy). */
#include "drivers/driver.h"

static const char *const state_names[LAB_INST_NSTATES] = {
    [LAB_INST_OFFLINE] = "offline", [LAB_INST_IDLE] = "idle",   [LAB_INST_BUSY] = "busy",
    [LAB_INST_PAUSED] = "paused",   [LAB_INST_FAULT] = "fault",
};

static const lab_fsm_edge_t edges[] = {
    {LAB_INST_OFFLINE, LAB_INST_IDLE, "the driver connected and the device answers"},
    {LAB_INST_OFFLINE, LAB_INST_BUSY, "the driver connected and a queued operation started"},
    {LAB_INST_OFFLINE, LAB_INST_PAUSED, "the driver connected while an operator holds the queue"},
    {LAB_INST_OFFLINE, LAB_INST_FAULT,
     "the driver connected and the device reports a condition that needs a person"},
    {LAB_INST_IDLE, LAB_INST_OFFLINE, "the connection was lost"},
    {LAB_INST_IDLE, LAB_INST_BUSY, "an operation started"},
    {LAB_INST_IDLE, LAB_INST_PAUSED, "an operator paused the queue"},
    {LAB_INST_IDLE, LAB_INST_FAULT,
     "the driver reports a fault, or an operation timed out or got a bad or error answer"},
    {LAB_INST_BUSY, LAB_INST_OFFLINE,
     "the connection was lost (the operation and the queue fail offline)"},
    {LAB_INST_BUSY, LAB_INST_IDLE, "the operation ended and nothing else is queued"},
    {LAB_INST_BUSY, LAB_INST_PAUSED,
     "an operator paused the queue (the running operation goes on to its end)"},
    {LAB_INST_BUSY, LAB_INST_FAULT,
     "the driver reports a fault, or the operation timed out or got a bad or error answer"},
    {LAB_INST_PAUSED, LAB_INST_OFFLINE, "the connection was lost"},
    {LAB_INST_PAUSED, LAB_INST_IDLE, "an operator resumed the queue"},
    {LAB_INST_PAUSED, LAB_INST_BUSY,
     "an operator resumed the queue and an operation started (or one still ran)"},
    {LAB_INST_PAUSED, LAB_INST_FAULT,
     "the driver reports a fault, or the operation still running failed on the device"},
    {LAB_INST_FAULT, LAB_INST_OFFLINE, "the connection was lost"},
    {LAB_INST_FAULT, LAB_INST_IDLE,
     "the device answers again (the driver reports idle, or an operation went through)"},
    {LAB_INST_FAULT, LAB_INST_BUSY, "the fault cleared and the next operation started"},
    {LAB_INST_FAULT, LAB_INST_PAUSED, "the fault cleared while an operator holds the queue"},
};

const lab_fsm_t lab_inst_fsm = {
    .name = "instrument",
    .nstates = LAB_INST_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 0,
};

const char *lab_inst_state_name(lab_inst_state_t s)
{
    return lab_fsm_state_name(&lab_inst_fsm, (int)s);
}

int lab_inst_set_state(lab_inst_state_t *state, lab_inst_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_inst_fsm, &cur, (int)to, id);
    *state = (lab_inst_state_t)cur;
    return rc;
}
