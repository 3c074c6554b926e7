/* The API's insides, shared by its files: the server struct, the request context and its states,
 * the route table's row, problem+json, and the responses. Nothing outside daemon/api includes it
 * but the unit test that holds the route table against the OpenAPI document.
 */
#ifndef LAB_API_API_INT_H
#define LAB_API_API_INT_H

#include "daemon/api/api.h"
#include "daemon/api/auth.h"
#include "core/jschema.h"
#include "core/text.h"
#include "daemon/store/runs.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lab_req lab_req_t;
typedef struct lab_stream lab_stream_t;
typedef struct lab_events_cache lab_events_cache_t;

/* One row per route: adding an endpoint is adding a row. roles == 0: no token needed. */
typedef struct lab_route {
    const char *method;
    const char *pattern; /* "/v1/runs/{id}": a {name} segment matches one non-empty segment */
    unsigned roles;      /* lab_role_t bits */
    bool body;           /* keeps a JSON request body (Content-Type checked, size limited) */
    void (*fn)(lab_req_t *rq);
} lab_route_t;

extern const lab_route_t lab_routes[];
extern const int lab_nroutes;
/* rq->route for what has no row: nothing matched, or a file of the web app (web.c) */
#define LAB_ROUTE_NONE (-1)
#define LAB_ROUTE_WEB (-2)

/* A request's life: headers seen -> body arriving -> (waiting for the store) -> answer ready.
 * DISCARD: a chunked body passed the limit, the 413 went out, the rest is dropped unread. */
typedef enum lab_rq_state {
    RQ_BODY,
    RQ_DISCARD,
    RQ_STORE,
    RQ_READY,
} lab_rq_state_t;

#define LAB_WHO_MAX (LAB_TEXT_BYTES(LAB_TOKEN_NAME_MAX) - 1) /* bytes */
/* http_idle_timeout when the config leaves it 0 (a config built by hand, as tests do). */
#define LAB_HTTP_IDLE_DEFAULT_S 15

/* A connection as the API tracks it (MHD's socket context): the deadline it is waiting for. */
enum { CONN_HEAD, CONN_STALL, CONN_LISTS };
typedef struct lab_conn {
    struct lab_conn *prev, *next; /* in api->wait_*[list], deadline order */
    lab_api_t *api;
    struct MHD_Connection *c;
    lab_req_t *rq;     /* CONN_STALL: the request whose body is awaited */
    int list;          /* CONN_HEAD, CONN_STALL, or -1 */
    uint64_t deadline; /* uv_now, ms */
} lab_conn_t;

struct lab_req {
    lab_api_t *api;
    struct MHD_Connection *conn;
    lab_req_t *next; /* the free list */
    lab_rq_state_t state;
    int route;                /* index in lab_routes, or -1 */
    const char *method, *url; /* MHD's, valid for the request's life */
    const char *param;        /* the {id} segment (in url), param_len bytes */
    size_t param_len;
    char who[LAB_WHO_MAX + 1]; /* the token's name, or "anonymous" */
    unsigned role;             /* the token's lab_role_t; every role when auth is off; 0: none */
    bool named;                /* who is a person's name (lab_token_t.named), or auth is off */
    bool has_body;
    long long clen; /* Content-Length, or -1 */
    char *body;     /* kept across requests (the pool), grown as needed */
    size_t len, cap;
    struct MHD_Response *resp; /* the answer, queued when MHD next asks */
    unsigned status;
    uint64_t t0;       /* uv_hrtime at the first callback */
    bool answered_raw; /* the answer went straight to the socket mid-body (http.c answer_raw) */
    /* POST .../actions: the action waiting for its instrument */
    char action[LAB_TEXT_BYTES(LAB_ACTION_CHARS)];
    int act_idem;       /* its Idempotency-Key's slot (instruments.c), or -1 */
    json_t *act_params; /* its params, for its audit entry (owned until recorded) */
    unsigned act_idem_gen;
};

#define LAB_STATUS_SLOTS 16

typedef struct lab_route_hits {
    unsigned status[LAB_STATUS_SLOTS];
    uint64_t n[LAB_STATUS_SLOTS];
} lab_route_hits_t;

struct lab_api {
    uv_loop_t *loop;
    const lab_clock_t *clock;
    lab_store_t *store;
    lab_pg_t *pg;
    lab_mqtt_t *mqtt;
    lab_instr_t *instr;
    lab_sched_t *sched;
    lab_labware_t *labware; /* the plate registry; NULL: none */
    lab_campaigns_t *campaigns;
    lab_submit_t *submit;           /* POST /v1/runs */
    bool own_submit;                /* made here (deps gave none) */
    lab_fleet_t *fleet;             /* NULL: [lab] shared_queue = off */
    lab_consumables_t *consumables; /* NULL: none counted */
    lab_jschema_t *campaign_schema;
    lab_jschema_t *batch_schema;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_check_t check;     /* runs MHD once more after connections were resumed */
    uv_timer_t deadlines; /* the earliest connection deadline (http.c) */
    lab_conn_t *wait_head[CONN_LISTS], *wait_tail[CONN_LISTS];
    int nconns;           /* connections MHD has open */
    int max_conns;        /* http_max_connections */
    unsigned idle_ms;     /* http_idle_timeout */
    uint64_t idle_closed; /* connections closed for want of a request head */
    int handles_open;
    bool accepting, closing;
    void (*close_cb)(void *arg);
    void *close_arg;

    bool auth;
    char *tokens_path;
    lab_tokens_t tokens;
    long max_body;
    lab_jschema_t *run_schema;
    lab_jschema_t *action_schema;
    lab_jschema_t *workflow_schema;

    int in_flight; /* requests waiting for the store */
    int active;    /* request contexts alive */
    lab_req_t *pool;
    int npool;
    struct lab_act_idem *act_idem; /* instruments.c: recent action keys and their answers */
    int act_idem_next;

    uint64_t started_ms;    /* uv_now at start */
    lab_route_hits_t *hits; /* lab_nroutes + 2 rows: the routes, unrouted requests, web files */
    uint64_t aborted;       /* requests that ended without an answer (client gone) */

    /* GET /v1/events (events.c) */
    lab_stream_t *streams;
    lab_events_cache_t *ecache; /* the newest events, formatted once for every stream */
    int nstreams, events_max;
    unsigned events_stall_ms;
    uv_timer_t events_timer; /* keepalives and stalled streams */
    uv_timer_t events_wake;  /* wakes the streams after commits, a batch at a time */
    uint64_t streams_dropped, streams_refused;
};

/* ---- problems (problem.c) ---- */
typedef enum lab_problem {
    LAB_P_BAD_JSON,
    LAB_P_BAD_REQUEST,
    LAB_P_UNAUTHORIZED,
    LAB_P_FORBIDDEN,
    LAB_P_NOT_FOUND,
    LAB_P_METHOD,
    LAB_P_IN_PROGRESS,
    LAB_P_TOO_LARGE,
    LAB_P_MEDIA_TYPE,
    LAB_P_INVALID,
    LAB_P_IDEM_MISMATCH,
    LAB_P_INTERNAL,
    LAB_P_UNAVAILABLE,
    LAB_P_CONFLICT,
    LAB_P_INSTRUMENT,
    LAB_P_INSTRUMENT_TIMEOUT,
    LAB_P_UNSIGNED,
    LAB_P_COUNT
} lab_problem_t;

/* The most bytes of outside text kept in a problem's detail, instance and error messages: cut at
 * a character boundary, invalid bytes replaced by U+FFFD. */
#define LAB_DETAIL_MAX 1024
#define LAB_INSTANCE_MAX 2048
#define LAB_TEXT_MAX 512

int lab_problem_status(lab_problem_t p);
/* The problem+json text: type, title, status, detail, instance and errors (stolen; NULL: an
 * empty array). Caller frees; NULL when it could not be built (then errors is freed). */
char *lab_problem_text(lab_problem_t p, const char *instance, json_t *errors, const char *detail);
/* Sets rq's answer to the problem; the response is returned for extra headers. */
struct MHD_Response *lab_problem(lab_req_t *rq, lab_problem_t p, json_t *errors, const char *fmt,
                                 ...) __attribute__((format(printf, 4, 5)));
/* Outside text (paths, header values, device words) as a JSON string: each invalid byte becomes
 * U+FFFD, and at most max bytes are kept, never half a character. */
json_t *lab_json_text(const char *s, size_t max);
/* [{"path": path, "message": message}], both made valid as by lab_json_text */
json_t *lab_errors_one(const char *path, const char *message);

/* Appends to errs one {path: name, message} for each query parameter of rq not among known
 * (NULL-terminated), the message naming those that are. */
void lab_query_unknown(lab_req_t *rq, const char *const *known, json_t *errs);
/* A decimal number from lo to hi, the whole string (digits only: no sign, no space). */
bool lab_query_num(const char *s, long long lo, long long hi, long long *out);
/* Appends one {path: name, message} to errs. */
void lab_query_error_add(json_t *errs, const char *name, const char *message);

/* ---- answers (http.c) ---- */
/* Sets rq's answer: text (malloc'd, taken over) with a content type. */
struct MHD_Response *lab_respond(lab_req_t *rq, unsigned status, const char *ctype, char *text,
                                 size_t len);
/* doc (stolen) as the answer; a 500 with a fixed body when doc is NULL or cannot be written. */
struct MHD_Response *lab_respond_json(lab_req_t *rq, unsigned status, json_t *doc);
/* The answer when the real one could not be built: 500 with a fixed problem+json body, logged
 * with why. Never fails short of memory exhaustion. */
struct MHD_Response *lab_respond_internal(lab_req_t *rq, const char *why);
/* The route's handler suspended rq for the store; its completion calls lab_req_resume. */
void lab_req_suspend(lab_req_t *rq);
void lab_req_resume(lab_req_t *rq);
/* Runs MHD soon (after connections were resumed from outside its callbacks' reach). */
void lab_api_kick(lab_api_t *api);
const char *lab_req_header(lab_req_t *rq, const char *name);
/* The request body as JSON valid against schema, or NULL with rq's answer set (400 malformed,
 * 422 with every problem; what names the document in the detail). */
json_t *lab_req_json(lab_req_t *rq, const lab_jschema_t *schema, const char *what);
/* An optional body of {} or {"reason": text of at most LAB_CANCEL_REASON_CHARS characters}
 * (cancel, pause): the body (an empty object when none was sent; the caller's reference), or
 * NULL with a 422 naming `what` set. */
json_t *lab_req_reason_body(lab_req_t *rq, const char *what);
/* SHA-256 (hex) of method, path and body: what an Idempotency-Key stands for. */
void lab_req_hash(lab_req_t *rq, char out[65]);
#define LAB_IDEM_KEY_MAX 255
const char *lab_req_query(lab_req_t *rq, const char *name);

/* ---- route handlers ---- */
void lab_api_healthz(lab_req_t *rq);
void lab_api_metrics(lab_req_t *rq);
void lab_api_openapi(lab_req_t *rq);
/* The OpenAPI document as served (openapi.c), or NULL when the embedded one does not read. */
json_t *lab_api_openapi_doc(void);
void lab_api_lab(lab_req_t *rq);
void lab_api_lab_runs(lab_req_t *rq);
void lab_api_runs_post(lab_req_t *rq);
void lab_api_runs_list(lab_req_t *rq);
void lab_api_runs_get(lab_req_t *rq);
void lab_api_runs_cancel(lab_req_t *rq);
void lab_api_runs_resume(lab_req_t *rq);
void lab_api_runs_priority(lab_req_t *rq);
void lab_api_schedule(lab_req_t *rq);
void lab_api_campaigns_post(lab_req_t *rq);
void lab_api_campaigns_list(lab_req_t *rq);
void lab_api_campaigns_get(lab_req_t *rq);
void lab_api_campaigns_batch(lab_req_t *rq);
void lab_api_campaigns_scores(lab_req_t *rq);
void lab_api_campaigns_pause(lab_req_t *rq);
void lab_api_campaigns_resume(lab_req_t *rq);
void lab_api_campaigns_candidates(lab_req_t *rq);
void lab_api_campaigns_results(lab_req_t *rq);
void lab_api_audit_list(lab_req_t *rq);
void lab_api_audit_verify(lab_req_t *rq);

/* Operator decisions (audit.c). A decision is signed with the name of the person whose token
 * made it: 0 when rq's token names one (or the daemon runs without tokens), else rq's answer is
 * a 403 signature-required problem. */
int lab_req_signer(lab_req_t *rq);
/* Opens the decision's audit entry for the store ops it submits until lab_req_decision_end (who:
 * the token's name; doc: details (taken, may be NULL) with "signature": {name, meaning, at} and
 * "role"). end: recorded when the decision happened (by an op of its own when none took it),
 * dropped when it was refused. */
void lab_req_decision_begin(lab_req_t *rq, const char *what, const char *subject, const char *why,
                            const char *meaning, json_t *details);
void lab_req_decision_end(lab_req_t *rq, bool happened);
/* For a write that is not a decision (a submission, a workflow, a campaign, a batch, scores):
 * the audit entries of the first op it submits name the token's person; no entry of its own.
 * Closed with lab_req_decision_end(rq, false). */
void lab_req_attribute_begin(lab_req_t *rq);
/* An entry by an op of its own, who = the token's name (a manual action and its outcome). */
void lab_req_audit_record(lab_req_t *rq, const char *what, const char *subject, const char *why,
                          json_t *doc);
void lab_api_instruments_list(lab_req_t *rq);
void lab_api_instruments_get(lab_req_t *rq);
void lab_api_instruments_action(lab_req_t *rq);
void lab_api_instruments_pause(lab_req_t *rq);
void lab_api_instruments_record(lab_req_t *rq);
void lab_api_instruments_utilisation(lab_req_t *rq);
void lab_api_instruments_resume(lab_req_t *rq);
void lab_api_consumables_get(lab_req_t *rq);
void lab_api_consumables_refill(lab_req_t *rq);
void lab_api_plates_list(lab_req_t *rq);
void lab_api_plates_get(lab_req_t *rq);
void lab_api_plates_locate(lab_req_t *rq);
void lab_api_workflows_post(lab_req_t *rq);
void lab_api_workflows_list(lab_req_t *rq);
void lab_api_workflows_get(lab_req_t *rq);
void lab_api_me(lab_req_t *rq);
void lab_api_cell(lab_req_t *rq);

/* The web app (web.c): when rq's path is the app's (/ or /web/...), sets its answer and returns
 * true; false for every other path, left to the route table. */
bool lab_web_serve(lab_req_t *rq);

void lab_api_events(lab_req_t *rq);
void lab_api_prompts_list(lab_req_t *rq);

void lab_act_idem_free(lab_api_t *api);
/* The event streams: the commit listener and the timer (at start); at close every stream ends. */
int lab_events_start(lab_api_t *api, const lab_config_t *cfg);
void lab_events_stop(lab_api_t *api);
void lab_events_free(lab_api_t *api);
/* Bytes formatted for the streams and not yet taken by MHD, all streams together. */
size_t lab_events_buffered(const lab_api_t *api);

/* Counting answered requests for /metrics. */
void lab_metrics_count(lab_api_t *api, int route, unsigned status);

#endif
