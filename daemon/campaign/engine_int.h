/* The campaign engine's insides, shared by its files: campaigns, candidates and plates in
 * memory, and the helpers the files call in one another (prefix campaigns_). Nothing outside
 * daemon/campaign includes it.
 *   engine.c        writes, the scheduler's run events, restart, MQTT intake, the built-in
 *                   learner's rhythm
 *   design_space.c  campaign documents and the design space
 *   intake.c        batches, scores, candidates and results
 *   plate_runs.c    laying out plates, a plate's end (QC, results), batches done, the breaker
 *   shared_plates.c plate runs through the lab's shared queue ([lab] shared_queue = on)
 *   layout.c        well names, free wells around the controls, QC (pure; layout.h)
 *   proposals.c     a campaign as a problem for the learner and back (proposals.h) */
#ifndef LAB_CAMPAIGN_ENGINE_INT_H
#define LAB_CAMPAIGN_ENGINE_INT_H

#include "daemon/campaign/engine.h"

#include "core/id.h"
#include "core/jschema.h"
#include "daemon/model/campaign_states.h"
#include "daemon/model/candidate_states.h"
#include "daemon/model/plate_states.h"
#include "daemon/store/campaigns.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Instrument trouble (a plate run that failed or was cancelled by a person) re-lays its
 * candidates on a new plate, up to this many plates; it never counts as a failed experiment. */
#define PLATE_TRIES_MAX 3

typedef struct cand {
    json_t *doc; /* the record */
    const char *id, *batch;
    lab_cand_state_t state;
    int64_t ord;
    int plate; /* index in the campaign's plates while staged or running, else -1 */
} cand_t;

typedef struct plate {
    char run[LAB_UUID_LEN + 1];
    char name[96];
    int no;
    lab_plate_state_t state; /* through campaigns_plate_set only */
    bool queued;             /* its run goes through the lab's shared queue (run "" until known) */
    bool submitting;         /* its submission to the shared queue is under way */
    json_t *wells;           /* {WELL: {"role": "positive"|"negative"|"candidate", "candidate"?}} */
} plate_t;

typedef struct camp {
    char id[72];
    json_t *doc; /* the record: the campaign as created, with state, reason, counters */
    lab_camp_state_t state;
    cand_t **c;
    int nc, capc;
    json_t *batches; /* {batch id: record}, in order of arrival */
    plate_t *p;
    int np, capp;
    int64_t next_ord;
    bool proposing; /* the built-in learner's fit is under way */
} camp_t;

struct lab_campaigns {
    uv_loop_t *loop;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_sched_t *sched;
    lab_mqtt_t *mqtt;
    lab_campaigns_queue_t queue; /* submit NULL: plate runs go to this cell's scheduler */
    lab_jschema_t *batch_schema;
    camp_t **v;
    int n, cap;
    bool stopped;
    int ops, works; /* store writes and learner fits in flight */
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* engine.c */
int64_t campaigns_now_ms(const lab_campaigns_t *l);
json_t *campaigns_now_iso(const lab_campaigns_t *l);
const char *campaigns_str(const json_t *o, const char *key);
double campaigns_num(const json_t *o, const char *key, double def);
json_t *campaigns_problem(const char *detail, json_t *errors);
void campaigns_answer(lab_campaigns_cb cb, void *arg, int status, json_t *a);
camp_t *campaigns_camp_find(lab_campaigns_t *l, const char *id);
cand_t *campaigns_cand_find(camp_t *c, const char *id);
json_t *campaigns_objective(const camp_t *c);
bool campaigns_maximize(const camp_t *c);
json_t *campaigns_layout(const camp_t *c);
int campaigns_format_of(const camp_t *c);
int campaigns_replicates_of(const camp_t *c);
json_t *campaigns_control_wells(const camp_t *c, const char *which);
int campaigns_plate_capacity(const camp_t *c);
void campaigns_commit(lab_campaigns_t *l, lab_campaigns_write_t *w, lab_campaigns_cb cb, void *arg,
                      int status, json_t *ans);
void campaigns_put_camp(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c);
void campaigns_put_batch(lab_campaigns_write_t *w, camp_t *c, const char *batch, int64_t ord);
void campaigns_put_cand(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, cand_t *k);
/* The one way a candidate's or a campaign's state changes: the record follows (state, reason) and
 * goes into w. A move the table refuses changes nothing and returns LAB_ESTATE (logged); a
 * move to the state it is in only updates the reason. */
int campaigns_cand_set(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, cand_t *k,
                       lab_cand_state_t to, const char *reason);
int campaigns_camp_set(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, lab_camp_state_t to,
                       const char *reason);
/* The one way a plate's state changes: LAB_ESTATE (logged, nothing changed) for a refused move. */
int campaigns_plate_set(camp_t *c, int pi, lab_plate_state_t to);
camp_t *campaigns_camp_add(lab_campaigns_t *l, json_t *doc);
cand_t *campaigns_cand_add(camp_t *c, json_t *doc);
int campaigns_plate_add(camp_t *c, const char *run, const char *name, int no, json_t *wells);
void campaigns_maybe_propose(lab_campaigns_t *l, camp_t *c);
/* Frees the engine when it is closing and nothing is in flight any more. */
void campaigns_maybe_close(lab_campaigns_t *l);

/* design_space.c */
json_t *campaigns_params_of(const camp_t *c);
bool campaigns_param_is_choice(const json_t *p);
json_t *campaigns_design_reagents(const camp_t *c);
json_t *campaigns_volumes_of(const camp_t *c, const json_t *reagents, const json_t *params);
json_t *campaigns_control_volumes(const camp_t *c, const json_t *reagents, const char *which);

/* plate_runs.c */
void campaigns_noop_done(void *arg, int status, const char *doc, const char *msg);
double campaigns_plate_score(camp_t *c, int pi);
void campaigns_stage(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c);
void campaigns_unstage(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, const char *newer,
                       json_t *stale);
void campaigns_settle(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c);
void campaigns_breaker(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c);
void campaigns_plate_trouble(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, int pi,
                             const char *why);
void campaigns_plate_done(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, int pi,
                          const json_t *run);

/* shared_plates.c: plate runs in the lab's shared queue. The campaign's record keeps them under
 * "queue_plates" {plate name: {"key", "sub", "wells", "run"?}} until they end, so a restart
 * submits again with the same key (the same run) or waits for the run it has. */
#define CAMPAIGNS_QUEUE_PLATES "queue_plates"
void campaigns_queue_stage(lab_campaigns_t *l, camp_t *c, int pi, json_t *sub);
void campaigns_queue_forget(lab_campaigns_t *l, camp_t *c, int pi, const char *reason);
void campaigns_queue_flush(lab_campaigns_t *l);
void campaigns_queue_recover(lab_campaigns_t *l, camp_t *c);
/* A campaign paused: its plates no cell holds yet leave the lab's queue, their candidates wait
 * for a plate again (laid out anew on resume); plates a cell holds go on. */
void campaigns_queue_pause(lab_campaigns_t *l, camp_t *c);

#endif
