/* The online scheduler: owns every run that is not over. It re-plans what is not yet started with
 * the planner (planner/) on every event (a submission, a step that ends early or late or fails,
 * an instrument that stops or comes back, a cancel, a resume; submissions at most every 100 ms):
 * the runs under way and a look-ahead window of the first waiting runs in the planner's order,
 * the others waiting in a queue with that reason (docs/design.md), dispatches each step to its
 * instrument's driver at the planned lab time, runs the step's program of driver actions
 * (daemon/sched/program.c), keeps the run and step state machines (docs/state-tables.md) in the
 * local store and the outbox (run.state rows carry the steps; measurement rows the values of read
 * steps), and applies the recovery policy when a step fails or was in flight when the daemon died.
 *
 * After the insert of a run commits, the API hands it over (lab_sched_submitted); from then on the
 * scheduler is the only writer of that run. */
#ifndef LAB_SCHED_SCHED_H
#define LAB_SCHED_SCHED_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/instr/instr.h"
#include "daemon/labware/consumables.h"
#include "daemon/labware/labware.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <uv.h>

typedef struct lab_sched lab_sched_t;

/* Loads the runs that are not over from the store, marks steps that were in flight when the
 * daemon last stopped `interrupted` and applies their recovery policy, and plans. */
int lab_sched_start(lab_sched_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                    const lab_clock_t *clock, lab_store_t *st, lab_instr_t *instr);
/* Stops dispatching and ignores what instruments answer from now on: steps in flight stay
 * `running` in the store, and a restart finds them interrupted. Call before the instruments
 * close (their operations then end ECANCELLED, which must not count as a step's failure). */
void lab_sched_stop(lab_sched_t *s);
/* Frees everything once the store ops in flight are back; cb on the loop thread after. Call
 * after the instruments closed (no driver callback may follow). */
void lab_sched_close(lab_sched_t *s, void (*cb)(void *arg), void *arg);

/* A run whose insert committed (its document, JSON text). */
void lab_sched_submitted(lab_sched_t *s, const char *doc);
/* The same with the document as JSON, taken over (the API has it parsed already). */
void lab_sched_submitted_doc(lab_sched_t *s, json_t *doc);
/* The liquid handlers' tips and troughs: a step on one starts only when its program's needs are
 * there net of what steps under way reserved, and reserves them until it ends; short of them its
 * run waits with the shortfall as its waiting reason. NULL (the default): unlimited. */
void lab_sched_set_consumables(lab_sched_t *s, lab_consumables_t *c);
/* The plate registry whose sites count besides the scheduler's own: a site it says holds a plate
 * is never given to a step. NULL: none (the scheduler's own reservations only). */
void lab_sched_set_labware(lab_sched_t *s, lab_labware_t *lw);
/* Something outside changed (an instrument paused or resumed): plan again soon. */
void lab_sched_replan(lab_sched_t *s);

/* The end of an operator's request on a run: 0 and the run's document after the change (JSON
 * text, the callee's until the call returns), or a negative lab error with a message. */
typedef void (*lab_sched_done_cb)(void *arg, int status, const char *doc, const char *msg);

/* Cancels a run that is not over. A step running on an instrument ends at its next action
 * boundary; a plate inside an incubator is unloaded first. LAB_ENOTFOUND when the scheduler has
 * no such run (it is over, or unknown: ask the store). */
int lab_sched_cancel(lab_sched_t *s, const char *id, const char *by, const char *reason,
                     lab_sched_done_cb cb, void *arg);
/* Resumes a paused run: its stopped step is run again ("retry") or taken as done ("skip"); the
 * document keeps who did it and why (reason: NULL for none). LAB_ENOTFOUND as above;
 * LAB_ESTATE (msg says why) when the run is not paused. */
int lab_sched_resume(lab_sched_t *s, const char *id, const char *by, const char *how,
                     const char *reason, lab_sched_done_cb cb, void *arg, char *msg, size_t msglen);

/* A new priority class (urgent|high|normal|low, or NULL to keep it) and/or score (when
 * has_score) for a run that is not over; everything not started is planned again.
 * LAB_ENOTFOUND as above. */
int lab_sched_reprioritize(lab_sched_t *s, const char *id, const char *by, const char *priority,
                           bool has_score, double score, lab_sched_done_cb cb, void *arg);

/* Run listeners, called on the loop thread after each change of a run committed to the store:
 * the run's id, state and whole document (JSON text, valid during the call). At most 4. The
 * closed loop (daemon/campaign/) follows its plate runs this way. */
typedef void (*lab_sched_run_cb)(void *ctx, const char *id, const char *state, const char *doc);
void lab_sched_on_run(lab_sched_t *s, lab_sched_run_cb cb, void *ctx);
/* 1 when a live run has begun (a step started, or it is paused or interrupted), 0 when it has
 * not, LAB_ENOTFOUND when the scheduler has no such run. */
int lab_sched_run_started(lab_sched_t *s, const char *id);

/* GET /v1/schedule: {"now", "time_scale", "planned_at", "items": [{instrument, run, plate, step,
 * start, end, state}], "waiting": [{run, reason}], "lag_violations"}. New reference. */
json_t *lab_sched_timeline(lab_sched_t *s);
/* What the scheduler knows of a live run beyond its stored document: {"waiting_reason"?,
 * "next_step"?, "next_start"?}. NULL when it has no such run. New reference. */
json_t *lab_sched_run_live(lab_sched_t *s, const char *id);

/* ---- the lab's shared queue (daemon/fleet/) ---- */

/* How many more runs this cell should take from the lab's queue now: the claim window (runs held
 * that have not begun, local ones included) less those it holds; 0 when it is full or stopping.
 * A cell that takes only what it can start soon leaves the rest to the other cells. */
int lab_sched_room(lab_sched_t *s);
/* The claim window: runs not begun a cell holds at most before it takes more from the lab's
 * queue (room for the planner to order and pack them, no more). */
#define LAB_SCHED_CLAIM_WINDOW 32
/* The fence before a run's first step. With a gate set, the tick asks fn(ctx, id) once when the
 * run's first step is due: 0 means no fence for this run (it starts at once), 1 that the answer
 * comes later through lab_sched_gate_open; meanwhile the run waits with the waiting reason
 * "waiting for PostgreSQL to confirm this cell's claim". fn must not call back into the
 * scheduler. NULL removes the gate. */
typedef int (*lab_sched_gate_fn)(void *ctx, const char *id);
void lab_sched_set_gate(lab_sched_t *s, lab_sched_gate_fn fn, void *ctx);
/* The fence's answer for a run that waits on it: 0 it starts; LAB_ESTATE this cell does not hold
 * it (it is released); anything else (no answer could be had) asks again at the next plan
 * (lab_sched_replan). A run that does not wait on the fence is left alone. */
void lab_sched_gate_open(lab_sched_t *s, const char *id, int status);
#define LAB_SCHED_GATE_WHY "waiting for PostgreSQL to confirm this cell's claim"
/* A run that has not begun leaves the scheduler in state `released` (terminal), the reason in
 * its document (released_reason). LAB_ENOTFOUND when the scheduler has no such run, LAB_ESTATE
 * when it has begun (a step started: the plate is here). */
int lab_sched_release(lab_sched_t *s, const char *id, const char *reason);

typedef struct lab_sched_stats {
    int runs;     /* not over */
    long replans; /* plans made */
    double replan_ms_max;
    double replan_ms_last;
    long steps_started, steps_failed;
    long lag_violations; /* steps started later than their maximum lag allowed */
    long released;       /* runs given back to the lab's queue */
} lab_sched_stats_t;
void lab_sched_stats(const lab_sched_t *s, lab_sched_stats_t *out);

#endif
