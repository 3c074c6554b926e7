/* The closed loop's insides, shared by its files: campaigns, candidates and plates in memory,
 * and the helpers the files call in one another. Nothing outside daemon/loop includes it.
 *   loop.c      the engine: writes, the scheduler's run events, restart, MQTT intake, the
 *               built-in learner's rhythm
 *   campaign.c  campaign documents and the design space
 *   intake.c    batches, scores, candidates and results
 *   plates.c    laying out plates, a plate's end (QC, results), batches done, the breaker */
#ifndef LAB_LOOP_LOOP_INT_H
#define LAB_LOOP_LOOP_INT_H

#include "daemon/loop/loop.h"

#include "core/id.h"
#include "core/jschema.h"
#include "daemon/model/campaign.h"
#include "daemon/model/candidate.h"
#include "daemon/model/plate.h"
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
    lab_plate_state_t state; /* through loop_plate_set only */
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

struct lab_loop {
    uv_loop_t *loop;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_sched_t *sched;
    lab_mqtt_t *mqtt;
    lab_jschema_t *batch_schema;
    camp_t **v;
    int n, cap;
    bool stopped;
    int ops, works; /* store writes and learner fits in flight */
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* loop.c */
int64_t loop_now_ms(const lab_loop_t *l);
json_t *loop_now_iso(const lab_loop_t *l);
const char *loop_str(const json_t *o, const char *key);
double loop_num(const json_t *o, const char *key, double def);
json_t *loop_problem(const char *detail, json_t *errors);
void loop_answer(lab_loop_cb cb, void *arg, int status, json_t *a);
camp_t *loop_camp_find(lab_loop_t *l, const char *id);
cand_t *loop_cand_find(camp_t *c, const char *id);
json_t *loop_objective(const camp_t *c);
bool loop_maximize(const camp_t *c);
json_t *loop_layout(const camp_t *c);
int loop_format_of(const camp_t *c);
int loop_replicates_of(const camp_t *c);
json_t *loop_control_wells(const camp_t *c, const char *which);
int loop_plate_capacity(const camp_t *c);
void loop_commit(lab_loop_t *l, lab_loop_write_t *w, lab_loop_cb cb, void *arg, int status,
                 json_t *ans);
void loop_put_camp(lab_loop_t *l, lab_loop_write_t *w, camp_t *c);
void loop_put_batch(lab_loop_write_t *w, camp_t *c, const char *batch, int64_t ord);
void loop_put_cand(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, cand_t *k);
/* The one way a candidate's or a campaign's state changes: the record follows (state, reason) and
 * goes into w. A move the table refuses changes nothing and returns LAB_ESTATE (logged); a
 * move to the state it is in only updates the reason. */
int loop_cand_set(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, cand_t *k, lab_cand_state_t to,
                  const char *reason);
int loop_camp_set(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, lab_camp_state_t to,
                  const char *reason);
/* The one way a plate's state changes: LAB_ESTATE (logged, nothing changed) for a refused move. */
int loop_plate_set(camp_t *c, int pi, lab_plate_state_t to);
camp_t *loop_camp_add(lab_loop_t *l, json_t *doc);
cand_t *loop_cand_add(camp_t *c, json_t *doc);
int loop_plate_add(camp_t *c, const char *run, const char *name, int no, json_t *wells);
void loop_maybe_propose(lab_loop_t *l, camp_t *c);

/* campaign.c */
json_t *loop_params_of(const camp_t *c);
bool loop_param_is_choice(const json_t *p);
json_t *loop_design_reagents(const camp_t *c);
json_t *loop_volumes_of(const camp_t *c, const json_t *reagents, const json_t *params);
json_t *loop_control_volumes(const camp_t *c, const json_t *reagents, const char *which);

/* plates.c */
void loop_noop_done(void *arg, int status, const char *doc, const char *msg);
double loop_plate_score(camp_t *c, int pi);
void loop_stage(lab_loop_t *l, lab_loop_write_t *w, camp_t *c);
void loop_unstage(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, const char *newer, json_t *stale);
void loop_settle(lab_loop_t *l, lab_loop_write_t *w, camp_t *c);
void loop_breaker(lab_loop_t *l, lab_loop_write_t *w, camp_t *c);
void loop_plate_trouble(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, int pi, const char *why);
void loop_plate_done(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, int pi, const json_t *run);

#endif
