/* What the files of the scheduler (daemon/sched/) share: the live run and its steps, the step being
 * carried out, the queue's entries, the scheduler itself, and each file's functions. Nothing
 * outside this folder includes it; the public side is sched.h. */
#ifndef LAB_SCHED_SCHED_INT_H
#define LAB_SCHED_SCHED_INT_H

#include "daemon/sched/sched.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "daemon/model/run_states.h"
#include "daemon/model/step_states.h"
#include "daemon/sched/program.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* How a step's plate check (its "scan": true) went. */
typedef enum scan_outcome {
    SCAN_NONE = 0,
    SCAN_MATCH,    /* the label read is the run's plate */
    SCAN_MISMATCH, /* another barcode */
    SCAN_NOREAD,   /* the reader read no label */
    SCAN_FAILED,   /* the reader failed, or there is none at the instrument */
    SCAN_WAIVED,   /* an operator said the plate is right (resume with skip at the check) */
} scan_outcome_t;

typedef struct sstep {
    /* borrowed from the run's workflow, whole */
    const char *name, *op, *on;
    const json_t *params; /* borrowed from the run's workflow */
    const json_t *policy; /* on_failure of the step, else of the workflow; NULL: pause */
    double nominal_s;     /* the longest duration */
    double plan_s;        /* what the planner reserves (an incubator's handling added) */
    double min_lag, max_lag;
    lab_step_state_t state;
    int attempts, interruptions;
    int inst;                 /* instrument index where it runs or ran; -1 */
    int64_t start_ms, end_ms; /* lab wall time, 0 when not yet */
    int64_t plan_start_ms, plan_end_ms;
    int plan_inst;
    int64_t plan_move_ms; /* the plate's move onto plan_inst, on plan_mover; 0: none */
    int plan_mover, plan_move_from;
    int cassette, slot; /* the incubator site it was given; 0 when none */
    bool holds_site;    /* and still holds it */
    int64_t loaded_ms;  /* checkpoint: the plate went in */
    bool unloaded;
    bool late_noted;
    double lag_s; /* start - previous end, seconds; < 0 when not started or first */
    /* the plate check: asked by the workflow; how it went; the step stopped at it and waits
     * for an operator (resume with skip waives it) */
    bool scan, scan_waived, scan_held, scan_has_read;
    scan_outcome_t scan_outcome;
    int scan_reader; /* instrument index; -1 */
    int64_t scan_ms;
    char scan_read[96]; /* printable ASCII of what was read */
    char scan_by[64];   /* who waived it */
    bool lag_violated;
    char error[300];
    json_t *consumed; /* what its confirmed actions used: {tips, reagents: {name: µL}}; NULL */
} sstep_t;

typedef struct exec exec_t;

/* A run's passage through the fence (lab_sched_set_gate). */
typedef enum gate { GATE_NONE, GATE_ASKED, GATE_OPEN } gate_t;

typedef struct srun {
    char id[LAB_UUID_LEN + 1];
    json_t *doc; /* the stored document, kept current */
    json_t *wf;  /* the workflow version it follows; NULL when not stored */
    char *plate; /* the whole barcode: up to LAB_RUN_PLATE_CHARS characters */
    sstep_t *st;
    int n;
    lab_run_state_t state;
    int prio;
    double score;
    int64_t created_ms, deadline_ms; /* deadline_ms < 0: none */
    int cur;                         /* the step running, or the next to run */
    exec_t *ex;
    char why[1024];    /* why it waits: a planner reason, or why it is paused */
    uint64_t why_hash; /* of the reason its document carries (0: none) */
    uint64_t age;      /* arrival order: the planner's last tie-break */
    gate_t gate;
    bool dropped;     /* left s->runs during the tick's walk; freed after it */
    bool prompt_open; /* its run:ID:paused prompt is open (it waits for a person) */
    struct srun *next_dropped;
} srun_t;

/* A queued run beyond the look-ahead window: what ranks it, nothing more (its document stays
 * in the store until it enters the window). */
typedef struct cold {
    char id[LAB_UUID_LEN + 1];
    int prio;
    double score;
    int64_t deadline_ms; /* < 0: none */
    uint64_t age;
} cold_t;

/* A queued run whose workflow version is not stored. */
typedef struct orphan {
    cold_t c;
    char *wf;
    int version; /* 0: any */
} orphan_t;

/* A workflow version as the store holds it, shared by the runs that follow it. */
typedef struct wfc {
    char *name;
    int version;       /* 0: the newest */
    json_t *wf;        /* NULL: not stored when last asked */
    uint64_t asked_ms; /* loop time of the last question to the store */
} wfc_t;

/* One step being carried out: its program and where it is. */
struct exec {
    srun_t *r;
    int k;
    uint64_t gen;
    program_t *prog;
    size_t pc;
    int64_t wait_until_ms; /* 0: not waiting */
    int64_t deadline_ms;
    bool in_call, hold, cleanup;
    bool lag_pending; /* the lag is taken when the step's own first action starts */
    json_t *rows;     /* measurement payloads for the step's end */
    /* What the program did so far, for an operator ("tips picked up, aspirated 50 µL from
     * substrate"), and whether any of it was more than dry handling: a step that may not be
     * repeated is repeated by a policy only while nothing wet was done. */
    char done[400];
    bool wet;
    char hold_why[400];      /* while hold: why */
    lab_consumables_t *held; /* the run holds a reservation there until the step ends */
};

typedef struct call {
    lab_sched_t *s;
    char id[LAB_UUID_LEN + 1];
    uint64_t gen;
} call_t;

typedef struct pend {
    lab_sched_t *s;
    lab_sched_done_cb cb;
    void *arg;
} pend_t;

struct lab_sched {
    uv_loop_t *loop;
    const lab_config_t *cfg;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_instr_t *in;
    srun_t **runs;
    /* the tick's walk: the runs as it began, and those that left meanwhile (freed after it) */
    srun_t **walk, *dropped;
    int capwalk;
    bool walking;
    int nruns, cap;
    uv_timer_t tick;
    bool replan, in_tick, closing, tick_closed;
    int ops;   /* store ops in flight */
    int calls; /* driver calls in flight */
    void (*close_cb)(void *arg);
    void *close_arg;
    uint64_t gen;
    int nsites;
    unsigned char **site_used; /* per instrument: site i used (i = (cassette-1)*spc + slot-1) */
    int *site_n;
    lab_labware_t *lw; /* the plate registry's sites count too; NULL: none */
    json_t *history;   /* timeline items of runs that are over, newest last */
    struct {
        lab_sched_run_cb cb;
        void *ctx;
    } on_run[4];
    int non_run;
    int64_t planned_at_ms;
    lab_sched_stats_t stats;
    /* the queue beyond the look-ahead window: a heap, best ranked first; and the queued runs
     * whose workflow is not stored (asked again every WF_ASK_MS) */
    cold_t *cold;
    orphan_t *orphans;
    int ncold, capcold, norphans, caporphans;
    uint64_t age, orphans_asked_ms, replanned_ms;
    wfc_t *wfc;
    int nwfc;
    bool *inst_up; /* per instrument: available at its last change of state */
    lab_sched_gate_fn gate_fn;
    void *gate_ctx;
    lab_consumables_t *consumables; /* NULL: tips and troughs are not counted */
};

#define HISTORY_MAX 2000

/* Queued runs planned in detail, first in the planner's order; the others wait in the queue
 * with that reason and enter as the runs ahead of them start. */
#define WINDOW 256

/* Loop ms between two plans that submissions alone ask for: a burst costs one plan. */
#define SUBMIT_GAP_MS 100

/* Loop ms before the store is asked again about a workflow that was not stored. */
#define WF_ASK_MS 1000

#define WFC_MAX 256

static inline int64_t now_ms(const lab_sched_t *s)
{
    return lab_clock_now_ms(s->clock);
}

static inline void iso(int64_t ms, char buf[32])
{
    lab_time_iso(ms, buf);
}

static inline int ninst(const lab_sched_t *s)
{
    return s->in ? lab_instr_count(s->in) : 0; /* NULL once the instruments are gone */
}

static inline lab_driver_t *inst_at(lab_sched_t *s, int i)
{
    return i >= 0 && i < ninst(s) ? lab_instr_at(s->in, i) : NULL;
}

/* ---- sites.c: instruments and their sites ---- */

int inst_index(lab_sched_t *s, const char *id); /* -1: none with that id */
bool inst_available(lab_sched_t *s, int i);     /* idle or busy */
/* Whether instrument i is what a step's "on" names (its id or its kind). */
bool inst_matches(lab_sched_t *s, int i, const char *on);
/* A free site of instrument i, taken: false when every one is. */
bool sites_take(lab_sched_t *s, int i, int *cassette, int *slot);
void sites_mark(lab_sched_t *s, int i, int cassette, int slot, unsigned char used);
/* The step's site back, unless the plate is still inside. */
void sites_release(lab_sched_t *s, sstep_t *st);

/* ---- live_run.c: the live run, its document, its state ---- */

void doc_put_time(json_t *o, const char *key, int64_t ms); /* ms <= 0: the key goes */
int64_t doc_get_time(const json_t *o, const char *key);    /* 0: none */
double doc_num(const json_t *v, double def);
int run_prio_of(const char *p);
long run_violations(const srun_t *r);
/* Why the run waits now: its step holds on an instrument, or r->why; "" when it does not. */
const char *run_why(const srun_t *r);
/* A workflow version (cached, asked again after WF_ASK_MS when absent); NULL: not stored. */
json_t *run_wf_lookup(lab_sched_t *s, const char *name, int version);
/* The run's steps from its workflow version. false (with r->why) when it is not stored. */
bool run_bind_workflow(lab_sched_t *s, srun_t *r);
void run_steps_from_doc(lab_sched_t *s, srun_t *r);
/* A live run from its document (taken over), appended to s->runs. */
srun_t *run_new(lab_sched_t *s, json_t *doc);
srun_t *run_find(lab_sched_t *s, const char *id);
void run_free(srun_t *r);
/* Out of s->runs and freed; during the tick's walk, freed after it (run_free_dropped). */
void run_drop(lab_sched_t *s, srun_t *r);
void run_free_dropped(lab_sched_t *s);
json_t *run_timeline_item(lab_sched_t *s, srun_t *r, int k, bool planned);
void run_remove(lab_sched_t *s, srun_t *r);
/* Writes the run's document (with rows: measurement payloads, taken over) through the outbox;
 * p (may be NULL) is answered once it is stored. */
void run_persist(lab_sched_t *s, srun_t *r, json_t *rows, pend_t *p);
void run_why_flush(lab_sched_t *s, srun_t *r);
int run_set_state(lab_sched_t *s, srun_t *r, lab_run_state_t to);
int run_step_set(srun_t *r, sstep_t *st, lab_step_state_t to);
void run_finish(lab_sched_t *s, srun_t *r, lab_run_state_t to, json_t *rows, pend_t *p);

/* ---- queue.c: admission, the window, the queue, orphans ---- */

/* A queued run's document (taken over) into the window, the queue or the orphans; true when
 * the plan changes. */
bool queue_admit(lab_sched_t *s, json_t *doc);
bool queue_orphans_ask(lab_sched_t *s);
void queue_promote(lab_sched_t *s);
/* A live run by id; one in the queue enters the window (an operator acts on it). */
srun_t *queue_thaw(lab_sched_t *s, const char *id);
const char *queue_cold_why(char *buf, size_t cap);
const char *queue_orphan_why(const orphan_t *o, char *buf, size_t cap);
/* Why a run of the queue waits, or NULL when it is not there. */
const char *queue_why(lab_sched_t *s, const char *id, char *buf, size_t cap);
/* Runs not begun: those waiting in the window, the queue and the orphans. */
int queue_not_begun(lab_sched_t *s);

/* ---- plan.c: planning ---- */

bool plan_includes(const srun_t *r); /* the planner plans its steps not begun */
void plan_replan(lab_sched_t *s);

/* ---- exec.c: the step interpreter ---- */

exec_t *exec_new(lab_sched_t *s, srun_t *r, program_t *prog); /* prog taken over */
void exec_free(exec_t *ex);
/* Starts the run's current step on its planned instrument. */
void exec_start(lab_sched_t *s, srun_t *r);
/* Runs the program from pc until it waits (a call, a timer, an instrument) or ends. */
void exec_advance(lab_sched_t *s, exec_t *ex);
/* The step could not finish: record why and let the recovery policy decide. */
void exec_fail(lab_sched_t *s, exec_t *ex, const char *why, bool unknown_outcome);
/* The program of the run's step st on d (a campaign plate's design put in); NULL with err. */
program_t *exec_program(srun_t *r, const sstep_t *st, lab_driver_t *d, char *err, size_t errlen);
/* Steps of ours on instrument i right now (a cancelled run's unload included). */
int exec_on_inst(const lab_sched_t *s, int i);

/* ---- scan.c: plate checks ---- */

/* The barcode reader whose at = names instrument inst (an available one first), or -1. */
int scan_reader(lab_sched_t *s, int inst);
/* Whether some instrument a step's on names has a reader at it. */
bool scan_any_reader(lab_sched_t *s, const char *on);
/* The check before the step's own work (a SCAN entry on the reader, at 0); false with why in
 * err when the instrument has no reader. Nothing when the step has no check or it was waived. */
bool scan_insert(lab_sched_t *s, srun_t *r, sstep_t *st, program_t *prog, char *err, size_t errlen);
/* A SCAN entry ended: true when the plate is the run's and the step goes on; otherwise the step
 * stopped and the run paused (ex is gone). */
bool scan_done(lab_sched_t *s, exec_t *ex, const program_entry_t *e, const lab_drv_error_t *err,
               json_t *result);
/* The step stops at its check and the run pauses with why (ex is freed). */
void scan_stop(lab_sched_t *s, exec_t *ex, const char *why);
/* Resume with skip at a step that stopped at its check: the step runs without it. false when
 * the step did not stop at its check. */
bool scan_waive(sstep_t *st, const char *by);
/* The step document's "scan": {outcome, matched, read, reader, at, by?}, or NULL. */
json_t *scan_json(lab_sched_t *s, const sstep_t *st);
void scan_from_json(lab_sched_t *s, sstep_t *st, const json_t *o);

/* ---- recovery.c: the failure policy ---- */

void recovery_pause(lab_sched_t *s, srun_t *r, const char *why);
/* done: what the failed attempt's program did before it failed ("" or NULL: nothing known). */
void recovery_apply(lab_sched_t *s, srun_t *r, int k, bool unknown_outcome, const char *done);

/* ---- restart.c: runs taken up after a restart ---- */

/* Loads the runs that are not over from the store and recovers those a restart interrupted. */
void restart_load(lab_sched_t *s);

/* ---- sched.c: the tick ---- */

/* Something changed: plan again, at the next tick, which comes now. */
void replan_now(lab_sched_t *s);
/* A submission: plan again, at most once per SUBMIT_GAP_MS. */
void replan_soon(lab_sched_t *s);
/* The tick now, without a new plan (a wait to arm, a step to dispatch). */
void tick_now(lab_sched_t *s);
/* Queued runs wait for their workflow: a tick when the store is to be asked again. */
void tick_orphans_arm(lab_sched_t *s);
/* After close: s goes once its timer closed and no store op or driver call can come back. */
void sched_maybe_free(lab_sched_t *s);

#endif
