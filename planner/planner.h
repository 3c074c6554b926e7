/* The planner: places every step of every run on an instrument, in lab seconds from time 0,
 * without breaking a hard constraint (instrument capacity, minimum and maximum lags between a
 * step and the previous step's end, release times, steps already started), and with the soft
 * order priority class, deadline, score, age, then makespan. Pure computation: no I/O, no
 * libuv; the daemon plans online with it and `labloop plan` offline.
 *
 * Method: runs are placed whole, one after another in the soft order, each chain at the earliest
 * start where every step fits its instrument's free capacity and every lag window holds (a step
 * that would start too late pushes the chain's start back and the chain is placed again). A run
 * that cannot be placed within the horizon is unscheduled with the reason. Within the time
 * budget, runs of one priority class are re-ordered at random and the best plan (smallest
 * makespan) is kept. A pure job shop (every step on one instrument of capacity one, no lags,
 * one priority class, no deadlines) is planned by randomised Giffler-Thompson dispatching (most
 * work remaining) for a fifth of the budget, then improved by a tabu search on the disjunctive
 * graph (N5: swaps at the borders of the critical path's blocks) for the rest.
 *
 * Moves: when the problem has an instrument of kind "mover", two consecutive steps of a run on
 * different instruments get a move of the plate between them on a mover (its move_s long,
 * starting no earlier than the first step's end and ending no later than the second's start, so
 * inside the lag window). A move that served a step already started is not planned again.
 *
 * Time 0 is "now": steps already started may lie before it, nothing else is placed before it.
 * Runs with started steps are placed before all others (an urgent newcomer never breaks the lag
 * of a run under way). */
#ifndef LAB_PLANNER_H
#define LAB_PLANNER_H

#include "core/jschema.h"

#include <jansson.h>
#include <stddef.h>

#define PLAN_NAME_MAX 65 /* a step name (64 ASCII characters, LAB_STEP_NAME_CHARS) and its NUL */
#define PLAN_REASON_MAX 320

typedef struct plan_instrument {
    char id[PLAN_NAME_MAX];
    char kind[PLAN_NAME_MAX];
    int capacity;  /* plates at once, >= 1 */
    double move_s; /* a mover's time for one plate move (kind "mover"; JSON default and 0: 60 s) */
} plan_instrument_t;

typedef struct plan_step {
    char name[PLAN_NAME_MAX];
    char on[PLAN_NAME_MAX]; /* an instrument id or kind */
    double duration_s;
    double min_lag_s; /* after the previous step's end */
    double max_lag_s; /* < 0: unbounded */
} plan_step_t;

typedef struct plan_workflow {
    char name[128];
    plan_step_t *steps;
    int n;
} plan_workflow_t;

enum { PLAN_URGENT = 0, PLAN_HIGH, PLAN_NORMAL, PLAN_LOW };

typedef struct plan_fixed {
    int instrument; /* index */
    double start_s;
} plan_fixed_t;

typedef struct plan_run {
    char id[PLAN_NAME_MAX];
    int workflow; /* index */
    int priority; /* PLAN_URGENT .. PLAN_LOW */
    double score;
    double release_s;
    double deadline_s; /* < 0: none */
    /* Steps already started (the first nfixed of the workflow): kept exactly. */
    plan_fixed_t *fixed;
    int nfixed;
} plan_run_t;

typedef struct plan_problem {
    plan_instrument_t *instruments;
    int ninstruments;
    plan_workflow_t *workflows;
    int nworkflows;
    plan_run_t *runs;
    int nruns;
} plan_problem_t;

/* A step on its instrument, or (move = 1) the move of the plate onto step `step`'s instrument
 * from instrument `from`, on a mover. */
typedef struct plan_slot {
    int run, step, instrument;
    double start_s, end_s;
    int move;
    int from;
} plan_slot_t;

typedef struct plan_unscheduled {
    int run;
    char reason[PLAN_REASON_MAX];
} plan_unscheduled_t;

typedef struct plan_result {
    plan_slot_t *slots; /* by run, then step; a step's move right before it */
    int nslots;
    plan_unscheduled_t *unscheduled;
    int nunscheduled;
    double makespan_s;
    double lower_bound_s;
    long iterations; /* plans tried */
} plan_result_t;

typedef struct plan_options {
    long budget_ms; /* improvement time; 0: the first plan */
    unsigned long seed;
    int rule_only; /* 1: operation dispatching by most work remaining, no search (baseline) */
} plan_options_t;

/* Reads the problem document (labloop plan's format); every problem appended to errs with its
 * JSON Pointer. 0, or the number of problems. */
int plan_from_json(const json_t *doc, plan_problem_t *p, lab_jerrs_t *errs);
void plan_problem_free(plan_problem_t *p);

int plan_solve(const plan_problem_t *p, const plan_options_t *o, plan_result_t *r);
void plan_result_free(plan_result_t *r);

/* Checks every hard constraint of a result; 0, or -1 with the first broken one in why. With a
 * mover in the problem that includes the moves: one before every unstarted step whose plate
 * comes from another instrument, on a mover within its capacity, from and onto the right
 * instruments, lasting its move_s, inside [previous step's end, the step's start]. */
int plan_verify(const plan_problem_t *p, const plan_result_t *r, char *why, size_t cap);

/* {"makespan_s", "lower_bound_s", "steps": [...], "unscheduled": [...]} */
json_t *plan_to_json(const plan_problem_t *p, const plan_result_t *r);

/* The soft order of runs not begun, as the planner ranks them: priority class, then deadline
 * (< 0: none, last), then score (higher first), then age (older first). < 0 when a goes first.
 * The scheduler ranks the queue beyond its look-ahead window by the same function. */
typedef struct plan_rank {
    int priority;
    double deadline; /* any unit, the same for both; < 0: none */
    double score;
    unsigned long long age; /* arrival order */
} plan_rank_t;
int plan_rank_cmp(const plan_rank_t *a, const plan_rank_t *b);

#endif
