/* GET /metrics in the Prometheus text format 0.0.4: the outbox head, each sink's state, depth
 * (rows not yet delivered), lag (seconds since the oldest undelivered row was written) and
 * counters, the store's groups and ops, HTTP requests by route and status, requests in flight,
 * uptime. A sink that is not configured shows only state="disabled". And GET /v1/cell, the same
 * figures the web app's Cell page needs as JSON, with the runs counted by state. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/model/run_states.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static void __attribute__((format(printf, 2, 3))) put(buf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        LAB_ASSERT(n >= 0);
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n;
        b->p = lab_realloc(b->p, b->cap);
    }
}

static void head(buf_t *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void lab_metrics_count(lab_api_t *api, int route, unsigned status)
{
    lab_route_hits_t *h = &api->hits[route >= 0               ? route
                                     : route == LAB_ROUTE_WEB ? lab_nroutes + 1
                                                              : lab_nroutes];
    int i;
    for (i = 0; i < LAB_STATUS_SLOTS && h->status[i] && h->status[i] != status; i++)
        ;
    if (i == LAB_STATUS_SLOTS)
        i = LAB_STATUS_SLOTS - 1; /* more statuses than slots on one route: lumped into the last */
    h->status[i] = h->status[i] ? h->status[i] : status;
    h->n[i]++;
}

typedef struct sink_row {
    const char *name;
    bool enabled;
    lab_sink_stats_t st;
} sink_row_t;

static const lab_sink_state_t states[] = {LAB_SINK_DISABLED, LAB_SINK_CONNECTING, LAB_SINK_UP,
                                          LAB_SINK_DOWN};

/* Seconds between the oldest row a sink has not delivered and now; 0 when caught up. */
static double sink_lag(lab_api_t *api, int64_t cursor, int64_t head_seq)
{
    if (cursor >= head_seq)
        return 0;
    lab_outbox_row_t *rows = NULL;
    int n = lab_outbox_read(api->store, cursor, 1, &rows);
    double lag = 0;
    if (n > 0) {
        int64_t age = lab_clock_now_ms(api->clock) - rows[0].ts_ms;
        double scale = api->clock->scale > 0 ? api->clock->scale : 1;
        lag = age > 0 ? (double)age / 1000.0 / scale : 0;
    }
    if (n > 0)
        lab_outbox_rows_free(rows, n);
    return lag;
}

void lab_api_metrics(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    buf_t b = {lab_malloc(8192), 0, 8192};
    lab_store_stats_t ss;
    lab_store_stats(api->store, &ss);

    head(&b, "labloop_uptime_seconds", "gauge", "Seconds since the HTTP API started.");
    put(&b, "labloop_uptime_seconds %.3f\n", (double)(uv_now(api->loop) - api->started_ms) / 1000);
    head(&b, "labloop_outbox_head_seq", "gauge", "Newest committed outbox sequence number.");
    put(&b, "labloop_outbox_head_seq %lld\n", (long long)ss.head_seq);
    head(&b, "labloop_store_groups_total", "counter", "Store transactions (groups) committed.");
    put(&b, "labloop_store_groups_total %lld\n", (long long)ss.groups);
    head(&b, "labloop_store_ops_total", "counter", "Store operations committed.");
    put(&b, "labloop_store_ops_total %lld\n", (long long)ss.ops);
    head(&b, "labloop_store_ops_failed_total", "counter", "Store operations that failed.");
    put(&b, "labloop_store_ops_failed_total %lld\n", (long long)ss.ops_failed);
    head(&b, "labloop_store_queued_ops", "gauge", "Store operations waiting for the next group.");
    put(&b, "labloop_store_queued_ops %d\n", ss.queued);
    head(&b, "labloop_store_rebases_total", "counter",
         "Times the outbox was found behind PostgreSQL (a new or restored state_dir) and its new "
         "rows moved past PostgreSQL's cursor; alert on any.");
    put(&b, "labloop_store_rebases_total %lld\n", (long long)ss.rebases);
    head(&b, "labloop_store_rebase_onto_seq", "gauge",
         "The PostgreSQL cursor the newest rebase moved the outbox past, 0 when none.");
    put(&b, "labloop_store_rebase_onto_seq %lld\n", (long long)ss.rebase_onto);

    sink_row_t sinks[2] = {{"postgres", api->pg != NULL, {0}}, {"mqtt", api->mqtt != NULL, {0}}};
    if (api->pg)
        lab_pg_stats(api->pg, &sinks[0].st);
    if (api->mqtt)
        lab_mqtt_stats(api->mqtt, &sinks[1].st);
    head(&b, "labloop_sink_state", "gauge", "1 for the state each outbox sink is in.");
    for (int s = 0; s < 2; s++) {
        lab_sink_state_t cur = sinks[s].enabled ? sinks[s].st.state : LAB_SINK_DISABLED;
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++)
            put(&b, "labloop_sink_state{sink=\"%s\",state=\"%s\"} %d\n", sinks[s].name,
                lab_sink_state_name(states[k]), states[k] == cur);
    }
    static const struct {
        const char *name, *type, *help;
    } per_sink[] = {
        {"labloop_outbox_depth", "gauge", "Outbox rows not yet delivered to the sink."},
        {"labloop_sink_lag_seconds", "gauge", "Age of the oldest row not yet delivered."},
        {"labloop_sink_cursor", "gauge", "Last outbox seq delivered and acknowledged."},
        {"labloop_sink_delivered_total", "counter", "Rows delivered since start."},
        {"labloop_sink_batches_total", "counter", "Batches delivered since start."},
        {"labloop_sink_errors_total", "counter", "Delivery errors since start."},
        {"labloop_sink_connects_total", "counter", "Connections made since start."},
    };
    for (size_t m = 0; m < sizeof per_sink / sizeof per_sink[0]; m++) {
        head(&b, per_sink[m].name, per_sink[m].type, per_sink[m].help);
        for (int s = 0; s < 2; s++) {
            if (!sinks[s].enabled)
                continue;
            const lab_sink_stats_t *st = &sinks[s].st;
            put(&b, "%s{sink=\"%s\"} ", per_sink[m].name, sinks[s].name);
            switch (m) {
            case 0:
                put(&b, "%lld\n",
                    (long long)(ss.head_seq > st->cursor ? ss.head_seq - st->cursor : 0));
                break;
            case 1:
                put(&b, "%.3f\n", sink_lag(api, st->cursor, ss.head_seq));
                break;
            case 2:
                put(&b, "%lld\n", (long long)st->cursor);
                break;
            case 3:
                put(&b, "%lld\n", (long long)st->delivered);
                break;
            case 4:
                put(&b, "%lld\n", (long long)st->batches);
                break;
            case 5:
                put(&b, "%lld\n", (long long)st->errors);
                break;
            default:
                put(&b, "%lld\n", (long long)st->connects);
                break;
            }
        }
    }

    if (api->mqtt) {
        lab_mqtt_inbound_t in;
        lab_mqtt_inbound(api->mqtt, &in);
        head(&b, "labloop_mqtt_received_total", "counter",
             "Messages received on inbound topics (\"other\": on none of the table).");
        for (int t = 0; t < LAB_TOPIC_COUNT; t++)
            if (lab_topics[t].dir == LAB_TOPIC_IN)
                put(&b, "labloop_mqtt_received_total{topic=\"%s\"} %lld\n", lab_topics[t].name,
                    (long long)in.received[t]);
        put(&b, "labloop_mqtt_received_total{topic=\"other\"} %lld\n",
            (long long)in.received_other);
        head(&b, "labloop_mqtt_answered_total", "counter", "Answers to inbound messages sent.");
        put(&b, "labloop_mqtt_answered_total %lld\n", (long long)in.answered);
        head(&b, "labloop_mqtt_unanswered_total", "counter",
             "Inbound messages whose answer could not be sent, by why (each one is logged).");
        for (int w = 0; w < LAB_MQTT_WHY_COUNT; w++)
            put(&b, "labloop_mqtt_unanswered_total{reason=\"%s\"} %lld\n", lab_mqtt_why_names[w],
                (long long)in.unanswered[w]);
    }

    head(&b, "labloop_http_requests_total", "counter",
         "HTTP requests answered, by route and status.");
    for (int r = 0; r <= lab_nroutes + 1; r++) {
        const lab_route_hits_t *h = &api->hits[r];
        /* the web app's files under one label of their own, whatever the method */
        const char *method = r < lab_nroutes ? lab_routes[r].method : "";
        const char *route = r < lab_nroutes    ? lab_routes[r].pattern
                            : r == lab_nroutes ? "unmatched"
                                               : "/web/{file}";
        for (int i = 0; i < LAB_STATUS_SLOTS && h->status[i]; i++)
            put(&b, "labloop_http_requests_total{method=\"%s\",route=\"%s\",code=\"%u\"} %llu\n",
                method, route, h->status[i], (unsigned long long)h->n[i]);
    }
    head(&b, "labloop_http_requests_aborted_total", "counter",
         "HTTP requests that ended without an answer (the client went away).");
    put(&b, "labloop_http_requests_aborted_total %llu\n", (unsigned long long)api->aborted);
    head(&b, "labloop_event_streams", "gauge", "GET /v1/events streams open.");
    put(&b, "labloop_event_streams %d\n", api->nstreams);
    head(&b, "labloop_event_streams_buffered_bytes", "gauge",
         "Event bytes formatted for the streams and not yet taken by the server.");
    put(&b, "labloop_event_streams_buffered_bytes %zu\n", lab_events_buffered(api));
    head(&b, "labloop_event_streams_dropped_total", "counter",
         "Event streams closed because the client stopped taking bytes (events_stall).");
    put(&b, "labloop_event_streams_dropped_total %llu\n", (unsigned long long)api->streams_dropped);
    head(&b, "labloop_event_streams_refused_total", "counter",
         "Event streams refused with 503 at events_max_streams.");
    put(&b, "labloop_event_streams_refused_total %llu\n", (unsigned long long)api->streams_refused);
    head(&b, "labloop_http_connections", "gauge", "HTTP connections open.");
    put(&b, "labloop_http_connections %d\n", api->nconns);
    head(&b, "labloop_http_connections_idle_closed_total", "counter",
         "HTTP connections closed for sending no whole request head in time.");
    put(&b, "labloop_http_connections_idle_closed_total %llu\n",
        (unsigned long long)api->idle_closed);
    head(&b, "labloop_http_requests_in_flight", "gauge", "HTTP requests being handled.");
    put(&b, "labloop_http_requests_in_flight %d\n", api->active);
    head(&b, "labloop_http_requests_waiting_store", "gauge",
         "HTTP requests waiting for their store operation to commit.");
    put(&b, "labloop_http_requests_waiting_store %d\n", api->in_flight);

    int ni = lab_instr_count(api->instr);
    if (ni > 0) {
        head(&b, "labloop_instrument_state", "gauge", "1 for the state each instrument is in.");
        for (int i = 0; i < ni; i++) {
            lab_driver_t *d = lab_instr_at(api->instr, i);
            for (int s = LAB_INST_OFFLINE; s <= LAB_INST_FAULT; s++)
                put(&b, "labloop_instrument_state{instrument=\"%s\",state=\"%s\"} %d\n",
                    lab_driver_id(d), lab_inst_state_name((lab_inst_state_t)s),
                    (int)lab_driver_state(d) == s);
        }
        head(&b, "labloop_instrument_state_seconds_total", "counter",
             "Lab seconds each instrument spent in each state since the daemon started.");
        for (int i = 0; i < ni; i++) {
            lab_driver_t *d = lab_instr_at(api->instr, i);
            double secs[LAB_INST_NSTATES];
            lab_instr_state_seconds(api->instr, d, secs);
            for (int s = LAB_INST_OFFLINE; s <= LAB_INST_FAULT; s++)
                put(&b,
                    "labloop_instrument_state_seconds_total{instrument=\"%s\",state=\"%s\"} %.3f\n",
                    lab_driver_id(d), lab_inst_state_name((lab_inst_state_t)s), secs[s]);
        }
        static const struct {
            const char *name, *type, *help;
        } per_inst[] = {
            {"labloop_instrument_operations_total", "counter", "Operations ended, polls included."},
            {"labloop_instrument_failures_total", "counter", "Operations that ended in an error."},
            {"labloop_instrument_timeouts_total", "counter",
             "Operations the instrument never answered."},
            {"labloop_instrument_queue", "gauge", "Operations waiting for the instrument."},
        };
        for (size_t m = 0; m < sizeof per_inst / sizeof per_inst[0]; m++) {
            head(&b, per_inst[m].name, per_inst[m].type, per_inst[m].help);
            for (int i = 0; i < ni; i++) {
                lab_driver_t *d = lab_instr_at(api->instr, i);
                lab_driver_stats_t st;
                lab_driver_stats(d, &st);
                unsigned long long v = m == 0   ? st.ops
                                       : m == 1 ? st.failed
                                       : m == 2 ? st.timeouts
                                                : (unsigned long long)st.queued;
                put(&b, "%s{instrument=\"%s\"} %llu\n", per_inst[m].name, lab_driver_id(d), v);
            }
        }
    }

    if (api->sched) {
        lab_sched_stats_t sch;
        lab_sched_stats(api->sched, &sch);
        head(&b, "labloop_runs_live", "gauge", "Runs not over, held by the scheduler.");
        put(&b, "labloop_runs_live %d\n", sch.runs);
        head(&b, "labloop_replans_total", "counter", "Plans made (one per burst of events).");
        put(&b, "labloop_replans_total %ld\n", sch.replans);
        head(&b, "labloop_replan_seconds_max", "gauge", "The longest re-plan so far.");
        put(&b, "labloop_replan_seconds_max %.6f\n", sch.replan_ms_max / 1000);
        head(&b, "labloop_steps_started_total", "counter", "Steps dispatched to instruments.");
        put(&b, "labloop_steps_started_total %ld\n", sch.steps_started);
        head(&b, "labloop_steps_failed_total", "counter", "Step attempts that failed.");
        put(&b, "labloop_steps_failed_total %ld\n", sch.steps_failed);
        head(&b, "labloop_lag_violations_total", "counter",
             "Steps that started later than their maximum lag allowed.");
        put(&b, "labloop_lag_violations_total %ld\n", sch.lag_violations);
    }

    if (api->fleet) {
        lab_fleet_stats_t fl;
        lab_fleet_stats(api->fleet, &fl);
        head(&b, "labloop_lab_connected", "gauge",
             "1 while this cell is connected to the lab's shared queue in PostgreSQL.");
        put(&b, "labloop_lab_connected %d\n", fl.connected);
        head(&b, "labloop_lab_claims_total", "counter",
             "Runs claimed from the lab's queue and committed in the local store.");
        put(&b, "labloop_lab_claims_total %ld\n", fl.claims);
        head(&b, "labloop_lab_claim_batches_total", "counter",
             "Claim transactions that took at least one run.");
        put(&b, "labloop_lab_claim_batches_total %ld\n", fl.claim_batches);
        head(&b, "labloop_lab_claim_commit_seconds", "summary",
             "From labloop.claim_runs' answer to the claimed runs' local commit, over the latest "
             "claims.");
        put(&b, "labloop_lab_claim_commit_seconds{quantile=\"0.5\"} %.6f\n", fl.lat_p50_ms / 1000);
        put(&b, "labloop_lab_claim_commit_seconds{quantile=\"0.99\"} %.6f\n", fl.lat_p99_ms / 1000);
        put(&b, "labloop_lab_claim_commit_seconds_count %ld\n", fl.lat_n);
        head(&b, "labloop_lab_fence_total", "counter",
             "Answers of the fence before a claimed run's first step: started (this cell holds "
             "it) or refused (it went to another cell; the run was released).");
        put(&b, "labloop_lab_fence_total{answer=\"started\"} %ld\n", fl.fence_ok);
        put(&b, "labloop_lab_fence_total{answer=\"refused\"} %ld\n", fl.fence_refused);
        head(&b, "labloop_lab_releases_total", "counter",
             "Claimed runs this cell gave back before they began (stop, fence, reconcile).");
        put(&b, "labloop_lab_releases_total %ld\n", fl.released);
        head(&b, "labloop_lab_lost_runs_released_total", "counter",
             "Claimed runs of lost cells this cell's heartbeats sent back to the queue.");
        put(&b, "labloop_lab_lost_runs_released_total %ld\n", fl.lost_released);
    }

    lab_respond(rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
}

/* GET /v1/cell: what the web app's Cell page shows, in one answer: runs counted by state (the
 * store's state index), each sink's state, depth (rows not yet delivered) and lag as /metrics
 * gives them, each instrument's queue, and the outbox head. */
void lab_api_cell(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    lab_store_stats_t ss;
    lab_store_stats(api->store, &ss);
    json_t *runs = json_object();
    for (int s = 0; s < LAB_RUN_NSTATES; s++) {
        const char *name = lab_run_state_name((lab_run_state_t)s);
        int n = lab_runs_count(api->store, name);
        if (n < 0) {
            json_decref(runs);
            lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the store could not count the runs (%s)",
                        lab_strerror(n));
            return;
        }
        json_object_set_new(runs, name, json_integer(n));
    }
    sink_row_t sinks[2] = {{"postgres", api->pg != NULL, {0}}, {"mqtt", api->mqtt != NULL, {0}}};
    if (api->pg)
        lab_pg_stats(api->pg, &sinks[0].st);
    if (api->mqtt)
        lab_mqtt_stats(api->mqtt, &sinks[1].st);
    json_t *sk = json_object();
    for (int s = 0; s < 2; s++) {
        const lab_sink_stats_t *st = &sinks[s].st;
        if (!sinks[s].enabled) {
            json_object_set_new(
                sk, sinks[s].name,
                json_pack("{s:s}", "state", lab_sink_state_name(LAB_SINK_DISABLED)));
            continue;
        }
        json_object_set_new(
            sk, sinks[s].name,
            json_pack("{s:s, s:I, s:f, s:I, s:I}", "state", lab_sink_state_name(st->state), "depth",
                      (json_int_t)(ss.head_seq > st->cursor ? ss.head_seq - st->cursor : 0),
                      "lag_s", sink_lag(api, st->cursor, ss.head_seq), "cursor",
                      (json_int_t)st->cursor, "errors", (json_int_t)st->errors));
    }
    json_t *queues = json_object();
    int ni = api->instr ? lab_instr_count(api->instr) : 0;
    for (int i = 0; i < ni; i++) {
        lab_driver_t *d = lab_instr_at(api->instr, i);
        lab_driver_stats_t st;
        lab_driver_stats(d, &st);
        json_object_set_new(queues, lab_driver_id(d), json_integer((json_int_t)st.queued));
    }
    lab_respond_json(rq, 200,
                     json_pack("{s:o, s:o, s:o, s:I}", "runs", runs, "sinks", sk, "queues", queues,
                               "outbox_head", (json_int_t)ss.head_seq));
}
