/* The test harness: real servers for one test process, each on a free loopback port in its own
 * temporary directory, stopped when the test ends, even when it fails (atexit, and the servers
 * are started with PR_SET_PDEATHSIG so a crashed test takes them down too).
 *
 *   h_pg_t pg;     h_pg_start(&pg);      ... h_pg_stop(&pg); h_pg_restart(&pg); ...
 * h_pg_destroy(&pg); h_mqtt_t mq;   h_mqtt_start(&mq);    ... h_daemon_t d;  h_daemon_start(&d,
 * &pg, &mq, "extra ini text"); h_http(&d, "POST", ...);
 *
 * Every function returns 0 on success, or -1 after printing why to stderr. */
#ifndef LAB_TESTS_HARNESS_H
#define LAB_TESTS_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A free TCP port on 127.0.0.1 (bound and released). */
int h_free_port(void);
/* Lines of the file at path that hold needle (0 when it cannot be read). */
int h_file_count(const char *path, const char *needle);
/* A new empty directory under $TMPDIR (or /tmp), world-readable; path into out. */
int h_tempdir(const char *prefix, char *out, size_t len);
/* rm -rf */
void h_rmtree(const char *path);
/* Milliseconds on a monotonic clock; sleeping. */
long long h_now_ms(void);
void h_sleep_ms(int ms);

/* ---- PostgreSQL: a throw-away cluster (initdb as the postgres user when run as root) ---- */
typedef struct h_pg {
    char dir[256];
    int port;
    pid_t pid;          /* postmaster, or 0 when stopped */
    char conninfo[512]; /* host=DIR port=N dbname=postgres user=postgres */
} h_pg_t;

int h_pg_start(h_pg_t *pg);
int h_pg_stop(h_pg_t *pg);    /* fast shutdown; the cluster stays for restart */
int h_pg_restart(h_pg_t *pg); /* same directory and port */
void h_pg_destroy(h_pg_t *pg);
/* Runs sql; the first column of the first row into out (empty when no rows). */
int h_pg_query(h_pg_t *pg, const char *sql, char *out, size_t len);
/* The first column of the first row as a number, or -1 on error. */
long long h_pg_count(h_pg_t *pg, const char *sql);
/* Polls h_pg_count until it gives want or ms passed; returns the last count. */
long long h_pg_count_wait(h_pg_t *pg, const char *sql, long long want, int ms);
/* The same with the SQL formatted from fmt (at most 4 KiB). */
long long h_pg_countf(h_pg_t *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
long long h_pg_count_waitf(h_pg_t *pg, long long want, int ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- mosquitto on a free loopback port, with the project's broker config ---- */
typedef struct h_mqtt {
    char dir[256];
    int port;
    pid_t pid;
    char uri[64]; /* tcp://127.0.0.1:PORT */
} h_mqtt_t;

int h_mqtt_start(h_mqtt_t *mq);
int h_mqtt_stop(h_mqtt_t *mq);
int h_mqtt_restart(h_mqtt_t *mq);
void h_mqtt_destroy(h_mqtt_t *mq);

/* A subscriber (Paho's synchronous client) that records every message it receives. */
typedef struct h_msg {
    char *topic;
    char *payload;
    int retained;
} h_msg_t;

typedef struct h_sub h_sub_t;
h_sub_t *h_sub_start(const char *uri, const char *filter);
/* The same, but it reconnects by itself when the broker comes back (every second) and subscribes
 * again; messages published while it was away are not seen. */
h_sub_t *h_sub_start_durable(const char *uri, const char *filter);
/* How many times the subscription was acknowledged (1 after start, +1 per reconnect). */
int h_sub_subscribed(h_sub_t *s);
/* Waits until at least n messages arrived or timeout_ms passed; returns how many arrived. */
int h_sub_wait(h_sub_t *s, int n, int timeout_ms);
/* A snapshot of what arrived so far (valid until the next call on s). */
int h_sub_messages(h_sub_t *s, h_msg_t **msgs);
void h_sub_stop(h_sub_t *s);

/* An MQTT 5 requester (harness_req.c): publishes with a Response Topic, Correlation Data and the
 * user property idempotency-key, and records every answer on its filter with the Correlation
 * Data it carried (NULL: none). */
typedef struct h_answer {
    char *topic;
    char *payload;
    char *corr;
} h_answer_t;

typedef struct h_req h_req_t;
h_req_t *h_req_start(const char *uri, const char *filter);
/* QoS 1; response_topic, corr and key may each be NULL (left out). wait: until the broker has
 * it. */
int h_req_publish(h_req_t *r, const char *topic, const void *payload, size_t len,
                  const char *response_topic, const char *corr, const char *key, bool wait);
/* Waits until at least n answers arrived or timeout_ms passed; returns how many arrived. */
int h_req_wait(h_req_t *r, int n, int timeout_ms);
/* A snapshot of the answers so far (valid until the next call on r). */
int h_req_answers(h_req_t *r, h_answer_t **out);
/* The first answer that echoed corr, as JSON (the caller's), waiting up to timeout_ms; NULL
 * when none came. */
json_t *h_req_answer(h_req_t *r, const char *corr, int timeout_ms);
void h_req_stop(h_req_t *r);

/* ---- labloopd as a process ---- */
typedef struct h_daemon {
    char dir[256]; /* holds labloop.ini, state/, and the daemon's log */
    char conf[300];
    char log[300];
    int port;
    pid_t pid;
    char url[64]; /* http://127.0.0.1:PORT */
} h_daemon_t;

/* Writes a config ([labloop] with state_dir under dir, http on a free port; [postgres] when pg,
 * [mqtt] when mq; then `extra`, raw INI text appended) and starts labloopd ($LABLOOPD), waiting
 * until /healthz answers. */
/* The cell name the harness wrote in the daemon's config (cellN). */
void h_daemon_cell_name(const h_daemon_t *d, char *out, size_t cap);
int h_daemon_start(h_daemon_t *d, const h_pg_t *pg, const h_mqtt_t *mq, const char *extra);
/* Starts it again with the same config and state (after a kill or stop). */
int h_daemon_restart(h_daemon_t *d);
/* SIGTERM and wait: returns the exit status (or -1). */
int h_daemon_stop(h_daemon_t *d);
/* SIGKILL and reap. */
void h_daemon_kill9(h_daemon_t *d);
/* Whether labloopd ended by itself: reaps it and returns 1 with its wait status in *status (it
 * can then be restarted), 0 while it runs, -1 when it is not running under this harness. */
int h_daemon_exited(h_daemon_t *d, int *status);
/* Stop and remove its directory. */
void h_daemon_destroy(h_daemon_t *d);

/* One HTTP request with libcurl. headers: NULL or "Name: value" lines joined by '\n'.
 * *resp is malloc'd (may be NULL). Returns the HTTP status, or -1 when no response came. */
int h_http(const char *url, const char *method, const char *path, const char *headers,
           const char *body, char **resp);

/* A JSON request to the daemon's API that must answer `want` (the test fails otherwise, with the
 * answer); the answer's JSON (any value; null when there was none), owned by the caller. */
json_t *h_api(const h_daemon_t *d, const char *method, const char *path, const char *body,
              int want);

/* GET /v1/runs/{id} (must answer 200): the run's document, owned by the caller. */
json_t *h_run_get(const h_daemon_t *d, const char *id);
/* Waits up to ms for the run to be in state; its document then (the test fails otherwise, with
 * the last document seen). */
json_t *h_run_wait(const h_daemon_t *d, const char *id, const char *state, int ms);

/* Stores the example workflow (deploy/examples/elisa.workflow.json) through the API at url,
 * named `name` (NULL: its own name, "elisa"). 0 when it is stored (201, or 200: stored already). */
int h_workflow_example(const char *url, const char *name);

/* The value of one series of the daemon's /metrics, named as it is printed (with its labels,
 * e.g. "labloop_sink_connects_total{sink=\"mqtt\"}"); -1 when it is not there. */
long long h_metric(const h_daemon_t *d, const char *series);

/* Runs a command (sh -c) and returns its exit status; output into out when given. */
int h_run(const char *cmd, char *out, size_t len);

/* ---- labloop-sim: a child process with its config and control socket ---- */
typedef struct h_sim {
    char dir[256];
    char ini[300]; /* dir/labloop.ini, written from the text given */
    char ctl[300]; /* dir/ctl.sock */
    pid_t pid;
    int status; /* its exit status once reaped (-1: killed by a signal) */
} h_sim_t;

/* Writes ini_text to s->ini (paths in it are the caller's; put ptys under s->dir by building the
 * text after h_tempdir, or anywhere) and starts labloop-sim; returns once its control socket is
 * up (every instrument is served by then). Its log is dir/sim.log (stderr with H_VERBOSE). */
int h_sim_start(h_sim_t *s, const char *ini_text);
/* The same with more arguments (a NULL-terminated list, e.g. "--replay", PATH). */
int h_sim_start_args(h_sim_t *s, const char *ini_text, const char *const *args);
/* Waits up to ms for labloop-sim to end by itself: its exit status (-1: killed by a signal), or
 * -2 while it runs. */
int h_sim_wait_exit(h_sim_t *s, int ms);
/* One control request (printf format, a JSON object); the reply line into reply. 0 when it
 * says "ok":true. */
int h_sim_ctl(h_sim_t *s, char *reply, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Injects timeout|garbage|error|disconnect on an instrument for seconds (0: until "clear"). */
int h_sim_fault(h_sim_t *s, const char *id, const char *fault, double seconds);
/* The same, armed for the at_command-th command the instrument receives from now (the STAR):
 * that command is carried out and its reply garbled, an error, never sent, or the link dropped
 * (back after seconds) before it. */
int h_sim_fault_at(h_sim_t *s, const char *id, const char *fault, double seconds, int at_command);
/* Opens a pty labloop-sim serves (waiting up to ms for its symlink), raw; the fd or -1. */
int h_tty_open(const char *path, int ms);
/* Reads n bytes, waiting up to ms in all; how many arrived. */
int h_read_exact(int fd, void *buf, size_t n, int ms);
/* Lines of the simulator's log (its stderr, dir/sim.log) that hold needle; -1 when the log is
 * gone (H_VERBOSE, or its directory was removed). */
int h_sim_log_count(const h_sim_t *s, const char *needle);
/* TERM (KILL after 5 s), and the directory removed unless H_KEEP is set. Its exit status (-1:
 * ended by a signal). */
int h_sim_stop(h_sim_t *s);

#endif
