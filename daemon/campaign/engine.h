/* The campaign engine, the closed loop (docs/design.md, Closed loop): campaigns, the candidate
 * batches ML pipelines push (HTTP or MQTT in/campaigns/{id}/batches), the candidates' states, their
 * plates (one run per plate, laid out around the controls, prioritised by the candidates' scores),
 * each plate's QC and normalisation, one result per candidate, batch done events, the failure
 * breaker, and the built-in learner.
 *
 * It owns its records (daemon/store/campaigns.h) and follows its plate runs through the
 * scheduler's run listener; the runs themselves belong to the scheduler once submitted. Every
 * change is committed before it is answered or acted on. */
#ifndef LAB_CAMPAIGN_ENGINE_H
#define LAB_CAMPAIGN_ENGINE_H

#include "core/clock.h"
#include "daemon/bus/mqtt.h"
#include "daemon/model/candidate_states.h"
#include "daemon/sched/sched.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <uv.h>

typedef struct lab_campaigns lab_campaigns_t;

/* The end of a request: an HTTP status and its answer (borrowed for the call). Statuses >= 400
 * come with {"detail": TEXT, "errors": [{path, message}]?}. */
typedef void (*lab_campaigns_cb)(void *arg, int status, json_t *answer);

/* The lab's shared queue for plate runs ([lab] shared_queue = on). main.c wires it to the fleet:
 * the engine sits below daemon/fleet and does not know its type. */
typedef void (*lab_campaigns_queued_cb)(void *arg, int status, const char *run, const char *msg);
typedef struct lab_campaigns_queue {
    /* A plate run into the lab's queue (sub borrowed; key: the plate's idempotency key). cb once,
     * never from inside the call: 0 with the run's id in the queue, LAB_ECONN (try again when
     * the connection is back), LAB_EINVAL or another negative code with msg. */
    void (*submit)(void *ctx, const json_t *sub, const char *key, lab_campaigns_queued_cb cb,
                   void *arg);
    /* Takes a run out of the queue when no cell holds it yet. cb (may be NULL) once, never from
     * inside the call: 0 when it is out, LAB_ESTATE when a live cell holds it (it goes on there),
     * another negative code with msg. */
    void (*cancel)(void *ctx, const char *run, const char *reason, lab_campaigns_queued_cb cb,
                   void *arg);
    void *ctx;
} lab_campaigns_queue_t;

/* Loads every campaign, batch and candidate, settles the plates that ended while the daemon was
 * down, and subscribes to in/campaigns/+/batches when mqtt is given. */
int lab_campaigns_start(lab_campaigns_t **out, uv_loop_t *loop, const lab_clock_t *clock,
                        lab_store_t *st, lab_sched_t *sched, lab_mqtt_t *mqtt,
                        const lab_campaigns_queue_t *queue);
/* Takes no new work (requests answer 503) and ignores the scheduler from now on. */
void lab_campaigns_stop(lab_campaigns_t *l);

/* A plate run changed state (done, failed or cancelled with its document, readings included):
 * the one way a plate's end reaches its campaign, from this cell's scheduler and from the lab's
 * queue alike. A plate ends once; a second end of the same run changes nothing. */
void lab_campaigns_run_changed(lab_campaigns_t *l, const char *id, const char *state,
                               const char *doc);
/* The ids of plate runs in the lab's queue whose end the campaigns wait for (a new array of
 * strings), to ask PostgreSQL after a (re)connect; also submits the plates that could not be. */
json_t *lab_campaigns_queued_runs(lab_campaigns_t *l);
/* Frees everything once the store ops and learner fits in flight are back; cb after. */
void lab_campaigns_close(lab_campaigns_t *l, void (*cb)(void *arg), void *arg);

/* POST /v1/campaigns (doc valid against campaign.schema.json): 201 and the campaign, 200 when
 * the same document was created before, 409 for another campaign with that id, 422 with every
 * problem. */
void lab_campaigns_create(lab_campaigns_t *l, const json_t *doc, const char *by,
                          lab_campaigns_cb cb, void *arg);
/* A batch for a campaign (valid against batch.schema.json), from HTTP or MQTT (via names it):
 * 201 {"status": "accepted", "accepted": [ids], "stale": [ids]}, 200 the same answer with
 * "duplicate": true for a batch received before with the same content, 404, 422. */
void lab_campaigns_batch(lab_campaigns_t *l, const char *campaign, const json_t *batch,
                         const char *by, const char *via, lab_campaigns_cb cb, void *arg);
/* POST .../scores {"scores": [{"id", "score", "uncertainty"?}]}: new scores for candidates not
 * started; their plates are re-prioritised. 200 {"rescored": [ids]}, 404, 422. */
void lab_campaigns_scores(lab_campaigns_t *l, const char *campaign, const json_t *body,
                          const char *by, lab_campaigns_cb cb, void *arg);
/* POST .../pause|resume. 200 and the campaign, 404, 409 when it is done. */
void lab_campaigns_control(lab_campaigns_t *l, const char *campaign, const char *what,
                           const char *by, lab_campaigns_cb cb, void *arg);

/* Reads, new references; NULL when there is no such campaign. */
json_t *lab_campaigns_get(lab_campaigns_t *l, const char *campaign);
json_t *lab_campaigns_list(lab_campaigns_t *l);
/* state NULL: every candidate. */
json_t *lab_campaigns_candidates(lab_campaigns_t *l, const char *campaign, const char *state);
json_t *lab_campaigns_results(lab_campaigns_t *l, const char *campaign);

#endif
