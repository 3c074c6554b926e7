/* The HTTP API: libmicrohttpd inside the loop (its epoll fd watched by uv_poll, its timeout on a
 * uv timer), a route table, bearer-token roles, problem+json errors, and the run endpoints. */
#ifndef LAB_API_API_H
#define LAB_API_API_H

#include "daemon/bus/mqtt.h"
#include "daemon/instr/instr.h"
#include "daemon/campaign/engine.h"
#include "daemon/fleet/fleet.h"
#include "daemon/fleet/submit.h"
#include "daemon/labware/consumables.h"
#include "daemon/labware/labware.h"
#include "daemon/sched/sched.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"

#include <stdbool.h>
#include <uv.h>

typedef struct lab_api lab_api_t;

typedef struct lab_api_deps {
    uv_loop_t *loop;
    const lab_config_t *cfg;
    const lab_clock_t *clock;
    lab_store_t *store;
    lab_pg_t *pg;     /* may be NULL (embedded mode) */
    lab_mqtt_t *mqtt; /* may be NULL */
    lab_instr_t *instr;
    lab_sched_t *sched;             /* may be NULL (no runs are carried out) */
    lab_campaigns_t *campaigns;     /* the campaign engine; may be NULL (no campaigns) */
    lab_fleet_t *fleet;             /* the lab's shared queue; NULL when [lab] shared_queue = off */
    lab_consumables_t *consumables; /* liquid handlers' tips and troughs; may be NULL */
    lab_labware_t *labware;         /* the plate registry; may be NULL (no /v1/plates answers) */
} lab_api_deps_t;

/* POST /v1/runs goes through a submission path of the API's own (this cell's queue only) until
 * lab_api_use_submit gives it the daemon's (shared with MQTT; the caller's, outlives the API). */
int lab_api_start(lab_api_t **out, const lab_api_deps_t *deps);
void lab_api_use_submit(lab_api_t *api, lab_submit_t *submit);
/* Hands a connected stream socket to the server as if accepted from 127.0.0.1 (the fuzzer feeds
 * requests through socketpairs this way). The server owns fd from then on, also on error. */
int lab_api_add_connection(lab_api_t *api, int fd);
/* HUP: re-read what can be re-read (the tokens file). */
int lab_api_reload(lab_api_t *api, const lab_config_t *cfg);
/* The sinks may go away before the API does (shutdown order). */
void lab_api_forget_sinks(lab_api_t *api);
/* Stops accepting connections; requests in flight finish (their store ops complete). */
void lab_api_stop_accepting(lab_api_t *api);
/* Requests still waiting for the store. */
int lab_api_in_flight(const lab_api_t *api);
/* Closes everything; cb on the loop thread after the struct is freed. */
void lab_api_close(lab_api_t *api, void (*cb)(void *arg), void *arg);

/* Whether a workflow step's `on` names a driver's kind or an instrument of ctx (a lab_instr_t;
 * NULL: kinds only). Used for POST /v1/workflows and [workflows] dir alike. */
bool lab_api_workflow_on_known(void *ctx, const char *on);

#endif
