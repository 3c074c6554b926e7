/* The reliability soak, a program anyone can run again (deploy/soak; a small run of it is a ctest
 * test). Three campaigns against real servers started by the harness, each ending in one line of
 * counts, then a summary; the exit status is 1 when anything was lost, duplicated, refused, read
 * with other than 96 values, missing on MQTT, or aborted.
 *
 *  kill9   labloopd (PostgreSQL, mosquitto, labloop-sim's STAR, three temperature controllers and
 *          a BioTek at a high time scale) takes runs from several HTTP clients, each submission
 * with its own Idempotency-Key and retried with it until it is acknowledged; the daemon is killed
 * with SIGKILL at random moments and restarted, --kills times or for --duration seconds (whichever
 * ends first; --kills 0 --duration S: for S seconds). An operator thread resumes the runs a kill
 *          left paused (a dispense of unknown outcome) and initializes instruments in fault.
 *  outage  the same cell under the same load with PostgreSQL and the broker both down for S s.
 *  fuzz    a daemon with [auth] gets random requests (methods, paths with invalid UTF-8 and long
 *          ones, headers, bodies, framing) on raw sockets, one at a time; a daemon that ends by
 *          itself is counted, the request that did it saved to a file, and the daemon restarted.
 *
 * Counted after each load campaign, once the runs drained and both sinks caught up: acked runs;
 * lost (acked, but unknown to the restarted daemon or absent from PostgreSQL); duplicated (one
 * submission twice in labloop.runs); reads (runs done) and reads_not_96 (a run whose measurements
 * in PostgreSQL are not exactly 96); mqtt_missing (an outbox row with an MQTT topic in
 * labloop.events that a subscriber connected for the whole soak never saw, by (cell, seq));
 * events_missing (outbox seqs absent from labloop.events); aborts (the daemon ending by itself).
 *
 *   soak [--kills N] [--duration S] [--outage-seconds S] [--fuzz N] [--clients N]
 *        [--time-scale X] [--max-live N] [--seed N] [--out DIR]
 *   soak --replay FILE...     sends saved requests to a fresh daemon, says which abort it */
#include "tests/bench/bench_util.h"
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef LABLOOP_SIM_PATH
#define LABLOOP_SIM_PATH "labloop-sim"
#endif

enum {
    SETTLE_MS = 180000,    /* both sinks catch up with the outbox head */
    FUZZ_ANSWER_MS = 3000, /* a fuzz request's answer, after the request was sent whole */
    FUZZ_DEATH_MS = 300,   /* a daemon that gave no answer: how long to wait for it to end */
    SAVE_MAX = 20,         /* aborting requests saved to files */
    HUNG_MS = 20000,       /* an instrument offline this long is power-cycled */
    INSTRUMENTS_MAX = 16,
};

/* The assay at a soak's pace: 3 columns dispensed, 1 min at 37 °C, read within 2 min. The heat is
 * on temperature controllers rather than a Liconic: a kill in the middle of a Liconic load leaves
 * the simulated plate where the restarted daemon does not expect it, and every later load of the
 * simulation fails, which would measure the simulation rather than the daemon. */
static const char soak_workflow[] =
    "{\"name\":\"soak-assay\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"temperature\",\"duration_s\":60,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":300},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

/* The cell's [instrument] sections, read by labloop-sim and labloopd alike: ptys under dir. */
static void cell_sections(char *out, size_t cap, const char *dir)
{
    int n = snprintf(out, cap,
                     "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
                     "sim_reagents = substrate\nsim_step_seconds = 2\nreagents = substrate\n"
                     "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n"
                     "sim_plate = P1\n",
                     dir, h_free_port());
    /* three heaters, or they would be what limits the cell */
    for (int i = 1; i <= 3 && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n,
                      "[instrument heat%d]\ndriver = modbus-temperature\n"
                      "modbus = tcp://127.0.0.1:%d\nmap = omega-cn7500\nunit = 1\nsim_tau = 20\n"
                      "poll_s = 0.5\n",
                      i, h_free_port());
}

/* The outbox kinds that have an MQTT topic (schemas/mqtt.md). */
static const char mqtt_kinds_sql[] = "('instrument.state','instrument.telemetry','run.state',"
                                     "'measurement','campaign.result','batch.done')";

/* ---- options: one row each ---- */

static struct soak_cfg {
    int kills, duration_s, outage_s, fuzz, clients, max_live, drain_s, seed;
    double time_scale;
    char out[256];
} cfg = {100, 0, 30, 3000, 4, 64, 300, 1, 60, "soak-out"};

static const struct soak_opt {
    const char *name;
    int *i;
    double *d;
    char *s;
    const char *help;
} soak_opts[] = {
    {"--kills", &cfg.kills, NULL, NULL, "kill -9s in the kill9 campaign (0: none, or --duration)"},
    {"--duration", &cfg.duration_s, NULL, NULL, "seconds the kill9 campaign lasts at most"},
    {"--outage-seconds", &cfg.outage_s, NULL, NULL, "PostgreSQL and broker down (0: skip)"},
    {"--fuzz", &cfg.fuzz, NULL, NULL, "fuzzed requests (0: skip)"},
    {"--clients", &cfg.clients, NULL, NULL, "concurrent HTTP clients submitting runs"},
    {"--max-live", &cfg.max_live, NULL, NULL, "clients wait while this many runs are live"},
    {"--drain-seconds", &cfg.drain_s, NULL, NULL, "longest wait for live runs to end"},
    {"--seed", &cfg.seed, NULL, NULL, "random seed (kill moments, fuzz)"},
    {"--time-scale", NULL, &cfg.time_scale, NULL, "lab seconds per real second"},
    {"--out", NULL, NULL, cfg.out, "directory for saved requests and logs"},
};

#define NOPTS ((int)(sizeof soak_opts / sizeof soak_opts[0]))

static void usage(void)
{
    fprintf(stderr, "usage: soak [OPTION N]... | soak --replay FILE...\n");
    for (int i = 0; i < NOPTS; i++)
        fprintf(stderr, "  %-18s %s\n", soak_opts[i].name, soak_opts[i].help);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    for (int a = 1; a < argc; a++) {
        int k = 0;
        while (k < NOPTS && strcmp(argv[a], soak_opts[k].name) != 0)
            k++;
        if (k == NOPTS || a + 1 == argc)
            usage();
        const struct soak_opt *o = &soak_opts[k];
        char *end = NULL, *v = argv[++a];
        if (o->i) {
            long n = strtol(v, &end, 10);
            if (*end || n < 0 || n > 100000000)
                usage();
            *o->i = (int)n;
        } else if (o->d) {
            *o->d = strtod(v, &end);
            if (*end || *o->d < 1 || *o->d > 10000)
                usage();
        } else {
            snprintf(o->s, sizeof cfg.out, "%s", v);
        }
    }
    if (cfg.clients < 1)
        usage();
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(3);
}

/* xorshift64*: each thread its own state, so a seed repeats a run's choices. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static int rnd_in(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1));
}

/* ---- a growing byte buffer ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf_t;

static void buf_add(buf_t *b, const void *data, size_t n)
{
    if (n > ((size_t)1 << 40))
        die("a buffer of %zu bytes", n);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            die("out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_fmt(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_fmt(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("out of memory");
    buf_add(b, s, (size_t)n);
    free(s);
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* ---- the daemon, watched ---- */

/* One metric's value from /metrics (the first line starting with `name`), or -1. */
static long long metric(const h_daemon_t *d, const char *name)
{
    char *text = NULL;
    long long v = -1;
    if (h_http(d->url, "GET", "/metrics", NULL, NULL, &text) == 200 && text) {
        size_t n = strlen(name);
        for (char *line = text; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == '{')) {
                char *sp = strchr(line, ' ');
                v = sp ? strtoll(sp + 1, NULL, 10) : -1;
                break;
            }
    }
    free(text);
    return v;
}

/* The smallest labloop_sink_cursor over the sinks, or -1. */
static long long sinks_cursor(const h_daemon_t *d)
{
    char *text = NULL;
    long long low = -1;
    if (h_http(d->url, "GET", "/metrics", NULL, NULL, &text) == 200 && text) {
        for (char *p = text; (p = strstr(p, "\nlabloop_sink_cursor{")); p++) {
            char *sp = strchr(p + 1, ' ');
            long long v = sp ? strtoll(sp + 1, NULL, 10) : -1;
            if (low < 0 || v < low)
                low = v;
        }
    }
    free(text);
    return low;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* The last lines of the daemon's log since byte `from` that say why it ended, into out. */
static void log_reason(const h_daemon_t *d, long from, char *out, size_t cap)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "tail -c +%ld '%s' | grep -a -E 'assert|abort|fatal|FATAL|error' | tail -n 2 | "
             "cut -c1-300",
             from + 1, d->log);
    if (h_run(cmd, out, cap) != 0 || !*out)
        snprintf(out, cap, "(nothing in the log)");
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

static const char *status_text(int st, char *buf, size_t cap)
{
    if (WIFSIGNALED(st))
        snprintf(buf, cap, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(st));
    return buf;
}

/* Where the daemon's log was at its last start (one daemon watched at a time). */
static long log_from;

static int restart(h_daemon_t *d)
{
    log_from = file_size(d->log);
    return h_daemon_restart(d);
}

/* Whether the daemon ended by itself; if so it is counted, reported and started again. */
static int watch(h_daemon_t *d, atomic_int *aborts, const char *where)
{
    int st;
    if (h_daemon_exited(d, &st) != 1)
        return 0;
    char why[64], line[700];
    log_reason(d, log_from, line, sizeof line);
    fprintf(stderr, "soak: %s: labloopd ended by itself (%s): %s\n", where,
            status_text(st, why, sizeof why), line);
    atomic_fetch_add(aborts, 1);
    if (restart(d))
        die("labloopd does not start again (%s)", d->log);
    return 1;
}

/* ---- the cell: PostgreSQL, mosquitto, labloop-sim, labloopd and a subscriber ---- */

typedef struct rec {
    int n;        /* the submission's number (its plate and key) */
    char id[40];  /* the run id of the 201 */
    int campaign; /* 1 kill9, 2 outage */
    bool missing; /* a restarted daemon did not know it */
    bool checked; /* looked up after a restart */
} rec_t;

typedef struct cell {
    h_pg_t pg;
    h_mqtt_t mq;
    h_sim_t sim;
    h_daemon_t d;
    h_sub_t *sub;
    PGconn *db;
    char name[64];   /* the daemon's cell */
    int mqtt_stored; /* subscriber messages already copied into soak.mqtt */
    atomic_int aborts;
    /* runs acknowledged, appended by the clients */
    pthread_mutex_t lock;
    rec_t *recs;
    int nrecs, cap;
    /* the operator */
    pthread_t op_thread;
    atomic_bool op_stop;
    atomic_int live;    /* labloop_runs_live, as last seen */
    atomic_int resumed; /* paused runs resumed */
    atomic_int inits;   /* instruments in fault initialized */
    /* an instrument offline for HUNG_MS: the operator asks for labloop-sim to be restarted */
    char sim_ini[5000];
    char hung[64];
    atomic_bool sim_hung;
    atomic_int sim_restarts;
} cell_t;

static PGresult *db_query(cell_t *c, const char *sql)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!c->db || PQstatus(c->db) != CONNECTION_OK) {
            PQfinish(c->db);
            c->db = PQconnectdb(c->pg.conninfo);
        }
        PGresult *r = PQexec(c->db, sql);
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK)
            return r;
        if (attempt == 1 || PQstatus(c->db) == CONNECTION_OK)
            die("%.200s: %s", sql, PQerrorMessage(c->db));
        PQclear(r);
    }
    return NULL;
}

static long long db_count(cell_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long db_count(cell_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = NULL;
    if (vasprintf(&sql, fmt, ap) < 0)
        die("out of memory");
    va_end(ap);
    PGresult *r = db_query(c, sql);
    long long v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    free(sql);
    return v;
}

static void *operator_main(void *arg);

static void cell_start(cell_t *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    char dir[256], sections[4096], extra[5200];
    if (h_pg_start(&c->pg) || h_mqtt_start(&c->mq) || h_tempdir("soak-cell", dir, sizeof dir))
        die("PostgreSQL or mosquitto did not start");
    cell_sections(sections, sizeof sections, dir);
    snprintf(c->sim_ini, sizeof c->sim_ini,
             "[labloop]\ntime_scale = %g\nsim_seed = %d\nsim_noise = 0.001\n%s", cfg.time_scale,
             cfg.seed, sections);
    if (h_sim_start(&c->sim, c->sim_ini))
        die("labloop-sim did not start");
    c->sub = h_sub_start_durable(c->mq.uri, "labloop/v1/#");
    if (!c->sub)
        die("the subscriber did not start");
    /* The sinks retry every second at most, so an outage ends in seconds. */
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = %g\n%s[postgres]\nretry_max = 1\n[mqtt]\nretry_max = 1\n",
             cfg.time_scale, sections);
    if (h_daemon_start(&c->d, &c->pg, &c->mq, extra))
        die("labloopd did not start");
    /* the cell's name, as the harness numbered it */
    FILE *conf = fopen(c->d.conf, "r");
    char line[256];
    while (conf && fgets(line, sizeof line, conf))
        if (sscanf(line, "cell = %63s", c->name) == 1)
            break;
    if (conf)
        fclose(conf);
    char *resp = NULL;
    int st = h_http(c->d.url, "POST", "/v1/workflows", NULL, soak_workflow, &resp);
    if (st != 201 && st != 200)
        die("POST /v1/workflows: %d %s", st, resp ? resp : "");
    free(resp);
    PQclear(db_query(c, "create schema soak; "
                        "create table soak.acked (n int primary key, id uuid not null, "
                        "campaign int not null, missing bool not null); "
                        "create table soak.mqtt (cell text, seq bigint, primary key (cell, seq))"));
    pthread_create(&c->op_thread, NULL, operator_main, c);
}

static void cell_stop(cell_t *c)
{
    atomic_store(&c->op_stop, true);
    pthread_join(c->op_thread, NULL);
    h_daemon_destroy(&c->d);
    h_sub_stop(c->sub);
    h_sim_stop(&c->sim);
    PQfinish(c->db);
    h_mqtt_destroy(&c->mq);
    h_pg_destroy(&c->pg);
    free(c->recs);
}

/* ---- the operator: what a person does overnight, every half second ---- */

static void post_empty(const char *url, const char *path, const char *body, atomic_int *count)
{
    char *resp = NULL;
    if (h_http(url, "POST", path, NULL, body, &resp) == 200)
        atomic_fetch_add(count, 1);
    free(resp);
}

/* The driver's own way out of a fault: initialize (STAR, reader) or reset (Liconic). */
static void operator_clear_fault(cell_t *c, const char *id)
{
    char path[128], body[64], *text = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s", id ? id : "-");
    json_t *doc = NULL;
    if (h_http(c->d.url, "GET", path, NULL, NULL, &text) == 200)
        doc = json_loads(text, 0, NULL);
    free(text);
    const char *way = NULL;
    size_t j;
    json_t *act;
    json_array_foreach(json_object_get(doc, "actions"), j, act)
    {
        const char *name = json_string_value(json_object_get(act, "name"));
        if (name && (strcmp(name, "initialize") == 0 || strcmp(name, "reset") == 0))
            way = name;
    }
    if (way) {
        snprintf(body, sizeof body, "{\"action\":\"%s\"}", way);
        strcat(path, "/actions");
        post_empty(c->d.url, path, body, &c->inits);
    }
    json_decref(doc);
}

static void *operator_main(void *arg)
{
    cell_t *c = arg;
    const char *url = c->d.url; /* the port stays across restarts */
    long long offline_since[INSTRUMENTS_MAX] = {0};
    while (!atomic_load(&c->op_stop)) {
        long long live = metric(&c->d, "labloop_runs_live");
        if (live >= 0)
            atomic_store(&c->live, (int)live);
        char *text = NULL;
        json_t *doc = NULL;
        if (h_http(url, "GET", "/v1/runs?state=paused&limit=500", NULL, NULL, &text) == 200)
            doc = json_loads(text, 0, NULL);
        free(text);
        size_t i;
        json_t *run;
        /* A kill in a dispense leaves its outcome unknown; the soak's operator says it did not
         * happen, so the plate gets its reagent. */
        json_array_foreach(json_object_get(doc, "runs"), i, run)
        {
            char path[128];
            snprintf(path, sizeof path, "/v1/runs/%s/resume",
                     json_string_value(json_object_get(run, "id")) ?: "-");
            post_empty(url, path, "{\"step\":\"retry\"}", &c->resumed);
        }
        json_decref(doc);
        doc = NULL;
        if (h_http(url, "GET", "/v1/instruments", NULL, NULL, &text) == 200)
            doc = json_loads(text, 0, NULL);
        free(text);
        json_array_foreach(json_object_get(doc, "instruments"), i, run)
        {
            const char *state = json_string_value(json_object_get(run, "state"));
            const char *id = json_string_value(json_object_get(run, "id"));
            if (state && strcmp(state, "fault") == 0)
                operator_clear_fault(c, id);
            if (i >= INSTRUMENTS_MAX)
                continue;
            /* A simulated instrument that stopped answering for good (a kill in the middle of
             * an exchange can leave its parser waiting for the rest) is power-cycled. */
            if (!state || strcmp(state, "offline") != 0) {
                offline_since[i] = 0;
            } else if (!offline_since[i]) {
                offline_since[i] = h_now_ms();
            } else if (h_now_ms() - offline_since[i] > HUNG_MS && !atomic_load(&c->sim_hung)) {
                pthread_mutex_lock(&c->lock);
                snprintf(c->hung, sizeof c->hung, "%s", id ? id : "-");
                pthread_mutex_unlock(&c->lock);
                atomic_store(&c->sim_hung, true);
                offline_since[i] = 0;
            }
        }
        json_decref(doc);
        h_sleep_ms(500);
    }
    return NULL;
}

/* ---- the load: clients submitting runs, each with its Idempotency-Key ---- */

typedef struct load {
    cell_t *cell;
    char prefix; /* plates K000001 (kill9), O000001 (outage) */
    int campaign;
    atomic_bool stop;
    atomic_int next, acked, replayed, retries, refused, given_up, cancelled;
    pthread_t *threads;
} load_t;

typedef struct answer {
    buf_t body;
    bool replayed;
} answer_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    buf_add(&((answer_t *)user)->body, data, size * nmemb);
    return size * nmemb;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user)
{
    if (size * nmemb >= 20 && strncasecmp(data, "Idempotent-Replayed:", 20) == 0)
        ((answer_t *)user)->replayed = true;
    return size * nmemb;
}

/* Cancels an acknowledged run, again after a kill, until an answer says it is over. */
static void client_cancel(load_t *l, const char *id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    for (long long end = h_now_ms() + 60000; h_now_ms() < end; h_sleep_ms(100)) {
        char *resp = NULL;
        int st = h_http(l->cell->d.url, "POST", path, NULL, "{\"reason\":\"soak\"}", &resp);
        free(resp);
        if (st == 200 || st == 409) {
            atomic_fetch_add(&l->cancelled, st == 200);
            return;
        }
        if (st >= 400 && st < 500) { /* 404: the lookups count it lost */
            fprintf(stderr, "soak: cancel of run %s: %d\n", id, st);
            return;
        }
    }
}

static void *client_main(void *arg)
{
    load_t *l = arg;
    cell_t *c = l->cell;
    uint64_t rs = (uint64_t)cfg.seed * 7919 + (uint64_t)(uintptr_t)&rs; /* one per thread */
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/v1/runs", c->d.url);
    while (!atomic_load(&l->stop)) {
        /* The cell finishes a run or two a second: with max_live runs live, a submission is
         * cancelled once acknowledged, so the load goes on at the clients' pace. */
        bool cancel = atomic_load(&c->live) >= cfg.max_live;
        int n = atomic_fetch_add(&l->next, 1) + 1;
        char body[160], key[80];
        snprintf(body, sizeof body,
                 "{\"workflow\":\"soak-assay\",\"plate\":\"%c%06d\",\"priority\":\"normal\"}",
                 l->prefix, n);
        snprintf(key, sizeof key, "Idempotency-Key: soak-%c%06d", l->prefix, n);
        struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
        hl = curl_slist_append(hl, key);
        /* The same key and body until an answer says what became of it. */
        for (long long give_up = 0;;) {
            answer_t a = {0};
            curl_easy_setopt(h, CURLOPT_URL, url);
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
            curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
            curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
            curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
            long st = 0;
            if (curl_easy_perform(h) == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
            if (st == 201) {
                json_t *doc = json_loads(a.body.p ? a.body.p : "", 0, NULL);
                const char *id = json_string_value(json_object_get(doc, "id"));
                pthread_mutex_lock(&c->lock);
                if (c->nrecs == c->cap) {
                    c->cap = c->cap ? 2 * c->cap : 1024;
                    c->recs = realloc(c->recs, (size_t)c->cap * sizeof *c->recs);
                    if (!c->recs)
                        die("out of memory");
                }
                rec_t *r = &c->recs[c->nrecs++];
                memset(r, 0, sizeof *r);
                r->n = n;
                r->campaign = l->campaign;
                snprintf(r->id, sizeof r->id, "%s", id ? id : "");
                pthread_mutex_unlock(&c->lock);
                atomic_fetch_add(&l->acked, 1);
                if (a.replayed)
                    atomic_fetch_add(&l->replayed, 1);
                if (cancel && id)
                    client_cancel(l, id);
                json_decref(doc);
                free(a.body.p);
                break;
            }
            free(a.body.p);
            if (st >= 400 && st < 500 && st != 409) {
                fprintf(stderr, "soak: submission %c%06d refused: %ld\n", l->prefix, n, st);
                atomic_fetch_add(&l->refused, 1);
                break;
            }
            /* No answer (a kill), 409 (the first attempt still commits), 5xx, 503 (stopping). */
            atomic_fetch_add(&l->retries, 1);
            if (atomic_load(&l->stop) && !give_up)
                give_up = h_now_ms() + 60000;
            if (give_up && h_now_ms() > give_up) {
                atomic_fetch_add(&l->given_up, 1);
                break;
            }
            h_sleep_ms(rnd_in(&rs, 50, 250));
        }
        curl_slist_free_all(hl);
        h_sleep_ms(rnd_in(&rs, 20, 200));
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void load_start(load_t *l, cell_t *c, char prefix, int campaign)
{
    memset(l, 0, sizeof *l);
    l->cell = c;
    l->prefix = prefix;
    l->campaign = campaign;
    l->threads = calloc((size_t)cfg.clients, sizeof *l->threads);
    for (int i = 0; i < cfg.clients; i++)
        pthread_create(&l->threads[i], NULL, client_main, l);
}

static void load_stop(load_t *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < cfg.clients; i++)
        pthread_join(l->threads[i], NULL);
    free(l->threads);
}

/* Looks up every acknowledged run of the campaign not yet looked up (all of them with all). */
static int lookup_acked(cell_t *c, int campaign, bool all)
{
    int missing = 0;
    pthread_mutex_lock(&c->lock);
    int n = c->nrecs;
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&c->lock);
        rec_t r = c->recs[i];
        pthread_mutex_unlock(&c->lock);
        if (r.campaign != campaign || (r.checked && !all))
            continue;
        char path[96], *resp = NULL;
        snprintf(path, sizeof path, "/v1/runs/%s", r.id);
        int st = h_http(c->d.url, "GET", path, NULL, NULL, &resp);
        free(resp);
        pthread_mutex_lock(&c->lock);
        c->recs[i].checked = true;
        if (st == 404 && !c->recs[i].missing) {
            c->recs[i].missing = true;
            missing++;
            fprintf(stderr, "soak: run %s (submission %d) acknowledged, unknown after restart\n",
                    r.id, r.n);
        }
        pthread_mutex_unlock(&c->lock);
    }
    return missing;
}

/* ---- the counts of a load campaign ---- */

typedef struct counts {
    long long acked, lost, duplicated, reads, reads_not_96, mqtt_missing, mqtt_checked;
    long long events_missing;
    long long unfinished, failed, cancelled, replayed, retries, refused, given_up;
    int aborts, resumed, inits, sim_restarts;
} counts_t;

/* The daemon watched (see watch), and labloop-sim restarted when the operator asked for it: from
 * the main thread, as the harness's children die with the thread that forked them. */
static void cell_watch(cell_t *c, const char *where)
{
    watch(&c->d, &c->aborts, where);
    if (!atomic_exchange(&c->sim_hung, false))
        return;
    pthread_mutex_lock(&c->lock);
    fprintf(stderr, "soak: %s: %s offline for %d s: labloop-sim restarted\n", where, c->hung,
            HUNG_MS / 1000);
    pthread_mutex_unlock(&c->lock);
    h_sim_stop(&c->sim);
    if (h_sim_start(&c->sim, c->sim_ini))
        die("labloop-sim does not start again");
    atomic_fetch_add(&c->sim_restarts, 1);
}

static void cell_sleep(cell_t *c, int ms, const char *where)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end;) {
        cell_watch(c, where);
        h_sleep_ms(ms < 50 ? ms : 50);
    }
}

/* Waits until no run is live (the operator keeps resuming), or drain_s passed. */
static void drain(cell_t *c, const char *where)
{
    long long end = h_now_ms() + (long long)cfg.drain_s * 1000;
    while (h_now_ms() < end) {
        cell_watch(c, where);
        if (metric(&c->d, "labloop_runs_live") == 0)
            return;
        h_sleep_ms(250);
    }
    fprintf(stderr, "soak: %s: runs still live after %d s; the first reasons:\n", where,
            cfg.drain_s);
    char *text = NULL;
    if (h_http(c->d.url, "GET", "/v1/schedule", NULL, NULL, &text) == 200) {
        json_t *doc = json_loads(text, 0, NULL);
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(doc, "waiting"), i, w)
        {
            if (i == 5)
                break;
            fprintf(stderr, "soak:   run %s %s: %s\n",
                    json_string_value(json_object_get(w, "run")) ?: "-",
                    json_string_value(json_object_get(w, "state")) ?: "-",
                    json_string_value(json_object_get(w, "reason")) ?: "-");
        }
        json_decref(doc);
    }
    free(text);
}

/* Waits until both sinks acknowledged the outbox head as it is now; returns that head. */
static long long settle(cell_t *c, const char *where)
{
    long long head = metric(&c->d, "labloop_outbox_head_seq");
    for (long long end = h_now_ms() + SETTLE_MS; h_now_ms() < end; h_sleep_ms(250)) {
        cell_watch(c, where);
        if (sinks_cursor(&c->d) >= head)
            return head;
    }
    fprintf(stderr, "soak: %s: the sinks are behind the outbox head %lld after %d s\n", where, head,
            SETTLE_MS / 1000);
    return head;
}

/* Copies what the subscriber has seen since the last call into soak.mqtt. */
static void store_mqtt(cell_t *c)
{
    h_msg_t *m;
    int n = h_sub_messages(c->sub, &m);
    buf_t sql = {0};
    int rows = 0;
    for (int i = c->mqtt_stored; i < n; i++) {
        json_t *doc = json_loads(m[i].payload, 0, NULL);
        json_t *seq = json_object_get(doc, "seq");
        const char *cell = json_string_value(json_object_get(doc, "cell"));
        if (json_is_integer(seq) && cell && strcmp(cell, c->name) == 0) {
            if (rows % 5000 == 0) {
                if (rows)
                    buf_str(&sql, " on conflict do nothing;");
                buf_str(&sql, "insert into soak.mqtt values ");
            } else {
                buf_str(&sql, ",");
            }
            buf_fmt(&sql, "('%s',%lld)", c->name, (long long)json_integer_value(seq));
            rows++;
        }
        json_decref(doc);
    }
    if (rows) {
        buf_str(&sql, " on conflict do nothing");
        PQclear(db_query(c, sql.p));
    }
    free(sql.p);
    c->mqtt_stored = n;
}

static void count_campaign(cell_t *c, load_t *l, long long seq_from, counts_t *k, const char *where)
{
    drain(c, where);
    long long head = settle(c, where);
    lookup_acked(c, l->campaign, true);
    store_mqtt(c);
    /* the acknowledged runs of this campaign, for the joins below */
    buf_t sql = {0};
    int rows = 0;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->nrecs; i++) {
        rec_t *r = &c->recs[i];
        if (r->campaign != l->campaign)
            continue;
        buf_str(&sql, rows ? "," : "insert into soak.acked values ");
        buf_fmt(&sql, "(%d,'%s',%d,%s)", r->campaign * 10000000 + r->n, r->id, r->campaign,
                r->missing ? "true" : "false");
        rows++;
    }
    pthread_mutex_unlock(&c->lock);
    if (rows)
        PQclear(db_query(c, sql.p));
    free(sql.p);
    int cp = l->campaign;
    k->acked = atomic_load(&l->acked);
    k->replayed = atomic_load(&l->replayed);
    k->retries = atomic_load(&l->retries);
    k->refused = atomic_load(&l->refused);
    k->given_up = atomic_load(&l->given_up);
    k->cancelled = atomic_load(&l->cancelled);
    /* acknowledged, then unknown to a restarted daemon or absent from PostgreSQL */
    k->lost = db_count(c,
                       "select count(*) from soak.acked a where campaign = %d and (missing or "
                       "not exists (select 1 from labloop.runs r where r.id = a.id))",
                       cp);
    k->duplicated = db_count(c,
                             "select coalesce(sum(n - 1), 0) from (select count(*) n from "
                             "labloop.runs where plate like '%c%%' group by plate) p",
                             l->prefix);
    k->reads = db_count(c,
                        "select count(*) from labloop.runs r join soak.acked a using (id) "
                        "where a.campaign = %d and r.state = 'done'",
                        cp);
    k->reads_not_96 = db_count(
        c,
        "select count(*) from (select r.state, (select count(*) from labloop.measurements m "
        "where m.run = r.id) n from labloop.runs r join soak.acked a using (id) where "
        "a.campaign = %d) x where (state = 'done' and n <> 96) or (state <> 'done' and n > 0)",
        cp);
    k->failed = db_count(c,
                         "select count(*) from labloop.runs r join soak.acked a using (id) "
                         "where a.campaign = %d and r.state = 'failed'",
                         cp);
    k->unfinished = db_count(c,
                             "select count(*) from labloop.runs r join soak.acked a using (id) "
                             "where a.campaign = %d and r.state not in ('done', 'failed', "
                             "'cancelled')",
                             cp);
    k->mqtt_missing = db_count(c,
                               "select count(*) from labloop.events e where e.cell = '%s' and "
                               "e.seq > %lld and e.seq <= %lld and e.kind in %s and not exists "
                               "(select 1 from soak.mqtt m where m.cell = e.cell and m.seq = "
                               "e.seq)",
                               c->name, seq_from, head, mqtt_kinds_sql);
    k->mqtt_checked = db_count(c,
                               "select count(*) from labloop.events where cell = '%s' and seq > "
                               "%lld and seq <= %lld and kind in %s",
                               c->name, seq_from, head, mqtt_kinds_sql);
    /* why runs failed, the first few */
    char q[400];
    snprintf(q, sizeof q,
             "select r.id || ': ' || coalesce(r.doc->>'failure', r.state) from labloop.runs r "
             "join soak.acked a using (id) where a.campaign = %d and r.state = 'failed' limit 5",
             cp);
    PGresult *fr = db_query(c, q);
    for (int i = 0; i < PQntuples(fr); i++)
        fprintf(stderr, "soak: %s: failed run %s\n", where, PQgetvalue(fr, i, 0));
    PQclear(fr);
    k->events_missing =
        (head - seq_from) - db_count(c,
                                     "select count(*) from labloop.events where cell = '%s' and "
                                     "seq > %lld and seq <= %lld",
                                     c->name, seq_from, head);
    k->aborts = atomic_exchange(&c->aborts, 0);
    k->resumed = atomic_exchange(&c->resumed, 0);
    k->inits = atomic_exchange(&c->inits, 0);
    k->sim_restarts = atomic_exchange(&c->sim_restarts, 0);
}

static void print_counts(const char *name, const char *head, const counts_t *k, long long ms)
{
    printf(
        "soak: %-6s %s acked=%lld lost=%lld duplicated=%lld reads=%lld reads_not_96=%lld "
        "mqtt_missing=%lld/%lld events_missing=%lld aborts=%d | replayed=%lld retries=%lld "
        "refused=%lld given_up=%lld cancelled=%lld failed=%lld unfinished=%lld operator_resumes=%d "
        "operator_inits=%d sim_restarts=%d seconds=%.0f\n",
        name, head, k->acked, k->lost, k->duplicated, k->reads, k->reads_not_96, k->mqtt_missing,
        k->mqtt_checked, k->events_missing, k->aborts, k->replayed, k->retries, k->refused,
        k->given_up, k->cancelled, k->failed, k->unfinished, k->resumed, k->inits, k->sim_restarts,
        (double)ms / 1000);
    fflush(stdout);
}

static bool counts_bad(const counts_t *k)
{
    return k->lost || k->duplicated || k->reads_not_96 || k->mqtt_missing || k->events_missing ||
           k->aborts || k->refused;
}

/* ---- campaign 1: kill -9 at random moments ---- */

static bool campaign_kill9(cell_t *c, uint64_t *rs)
{
    long long t0 = h_now_ms(), from = metric(&c->d, "labloop_outbox_head_seq");
    load_t l;
    load_start(&l, c, 'K', 1);
    int kills = 0;
    while ((!cfg.kills || kills < cfg.kills) &&
           (!cfg.duration_s || h_now_ms() - t0 < cfg.duration_s * 1000LL)) {
        cell_sleep(c, rnd_in(rs, 200, 4000), "kill9");
        watch(&c->d, &c->aborts, "kill9"); /* an end of its own is not taken for the kill */
        h_daemon_kill9(&c->d);
        kills++;
        if (restart(&c->d))
            die("labloopd does not start after kill %d (%s)", kills, c->d.log);
        /* what was acknowledged before the kill is there after it */
        lookup_acked(c, 1, false);
        if (kills % 10 == 0)
            fprintf(stderr, "soak: kill9: %d kills, %d acked\n", kills, atomic_load(&l.acked));
    }
    load_stop(&l);
    counts_t k = {0};
    count_campaign(c, &l, from, &k, "kill9");
    char head[32];
    snprintf(head, sizeof head, "kills=%d", kills);
    print_counts("kill9", head, &k, h_now_ms() - t0);
    return !counts_bad(&k);
}

/* ---- campaign 2: PostgreSQL and the broker down ---- */

static bool campaign_outage(cell_t *c)
{
    long long t0 = h_now_ms(), from = metric(&c->d, "labloop_outbox_head_seq");
    load_t l;
    load_start(&l, c, 'O', 2);
    cell_sleep(c, 2000, "outage");
    /* The broker keeps nothing when it stops (no persistence): what it had taken from the daemon
     * but not yet passed on to the subscriber would count as missing, though the daemon delivered
     * it. So the daemon holds still (SIGSTOP) until the subscriber has had nothing new for half a
     * second, and goes on (SIGCONT) once both servers are down. */
    kill(c->d.pid, SIGSTOP);
    h_msg_t *seen_msgs;
    int seen = h_sub_messages(c->sub, &seen_msgs), quiet = 0;
    for (long long end = h_now_ms() + 10000; quiet < 5 && h_now_ms() < end;) {
        h_sleep_ms(100);
        int now = h_sub_messages(c->sub, &seen_msgs);
        quiet = now == seen ? quiet + 1 : 0;
        seen = now;
    }
    if (h_pg_stop(&c->pg) || h_mqtt_stop(&c->mq))
        die("PostgreSQL or mosquitto did not stop");
    kill(c->d.pid, SIGCONT);
    cell_sleep(c, cfg.outage_s * 1000, "outage");
    if (h_pg_restart(&c->pg))
        die("PostgreSQL did not start again");
    /* The broker keeps no sessions: the daemon waits (SIGSTOP) until the subscriber is back, or
     * what it sends first would be counted missing for the subscriber's sake. */
    int subs = h_sub_subscribed(c->sub);
    kill(c->d.pid, SIGSTOP);
    if (h_mqtt_restart(&c->mq))
        die("mosquitto did not start again");
    for (long long end = h_now_ms() + 30000; h_sub_subscribed(c->sub) == subs; h_sleep_ms(20))
        if (h_now_ms() > end)
            die("the subscriber did not come back");
    kill(c->d.pid, SIGCONT);
    cell_sleep(c, 3000, "outage");
    load_stop(&l);
    counts_t k = {0};
    count_campaign(c, &l, from, &k, "outage");
    char head[32];
    snprintf(head, sizeof head, "down=%ds", cfg.outage_s);
    print_counts("outage", head, &k, h_now_ms() - t0);
    return !counts_bad(&k);
}

/* ---- campaign 3: the request fuzzer ---- */

#define TOKEN_ADMIN "soak-admin-token-0123456789"

typedef struct fuzz_env {
    h_sim_t sim;
    h_daemon_t d;
    char run_id[40];
} fuzz_env_t;

static void fuzz_env_start(fuzz_env_t *f)
{
    memset(f, 0, sizeof *f);
    char dir[256], sections[4096], ini[5000], extra[5400], tokens[300];
    if (h_tempdir("soak-fuzz", dir, sizeof dir))
        die("tempdir");
    cell_sections(sections, sizeof sections, dir);
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = %g\nsim_seed = %d\n%s", cfg.time_scale,
             cfg.seed, sections);
    if (h_sim_start(&f->sim, ini))
        die("labloop-sim did not start");
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    FILE *t = fopen(tokens, "w");
    if (!t || fprintf(t, TOKEN_ADMIN " admin soak\n") < 0 || fclose(t))
        die("cannot write %s", tokens);
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = %g\n%s[auth]\ntokens = %s\n",
             cfg.time_scale, sections, tokens);
    /* at warn: the daemon logs every request at debug, which would be most of the fuzz's cost */
    bench_daemon_start_quiet(&f->d, NULL, NULL, extra); /* [auth]: it stores its own workflow */
    log_from = file_size(f->d.log);
    const char *auth = "Authorization: Bearer " TOKEN_ADMIN;
    char *resp = NULL;
    int st = h_http(f->d.url, "POST", "/v1/workflows", auth, soak_workflow, &resp);
    free(resp);
    if (st != 201 && st != 200)
        die("fuzz: POST /v1/workflows: %d", st);
    st = h_http(f->d.url, "POST", "/v1/runs", auth,
                "{\"workflow\":\"soak-assay\",\"plate\":\"F0\"}", &resp);
    json_t *doc = st == 201 ? json_loads(resp, 0, NULL) : NULL;
    snprintf(f->run_id, sizeof f->run_id, "%s",
             json_string_value(json_object_get(doc, "id")) ?: "no-run");
    json_decref(doc);
    free(resp);
}

static void fuzz_env_stop(fuzz_env_t *f)
{
    h_daemon_destroy(&f->d);
    h_sim_stop(&f->sim);
}

static const char *const fuzz_routes[] = {
    "/healthz",
    "/metrics",
    "/v1/runs",
    "/v1/runs/{id}",
    "/v1/runs/{id}/cancel",
    "/v1/runs/{id}/resume",
    "/v1/runs/{id}/priority",
    "/v1/schedule",
    "/v1/instruments",
    "/v1/instruments/{id}",
    "/v1/instruments/{id}/actions",
    "/v1/instruments/{id}/pause",
    "/v1/instruments/{id}/resume",
    "/v1/workflows",
    "/v1/workflows/{name}",
    "/v1/campaigns",
    "/v1/campaigns/{id}",
    "/v1/campaigns/{id}/batches",
    "/v1/campaigns/{id}/scores",
    "/v1/campaigns/{id}/pause",
    "/v1/campaigns/{id}/resume",
    "/v1/campaigns/{id}/candidates",
    "/v1/campaigns/{id}/results",
};

/* Bodies that get past parsing to validation, by the route's last segment. */
static const struct {
    const char *tail;
    const char *body;
} fuzz_bodies[] = {
    {"/v1/runs", "{\"workflow\":\"soak-assay\",\"plate\":\"FZ\",\"priority\":\"normal\"}"},
    {"/cancel", "{\"reason\":\"fuzz\"}"},
    {"/resume", "{\"step\":\"retry\"}"},
    {"/priority", "{\"priority\":\"urgent\",\"score\":2.5}"},
    {"/actions", "{\"action\":\"status\",\"params\":{},\"timeout_s\":5}"},
    {"/v1/workflows", soak_workflow},
    {"/v1/campaigns", "{\"id\":\"c1\",\"workflow\":\"soak-assay\",\"space\":{\"x\":[0,1]}}"},
    {"/batches", "{\"batch\":1,\"candidates\":[{\"id\":\"a\",\"params\":{\"x\":0.5}}]}"},
    {"/scores", "{\"scores\":[{\"candidate\":\"a\",\"value\":1}]}"},
};

static const char *const fuzz_methods[] = {"GET",      "POST",    "PUT",   "DELETE", "PATCH",
                                           "HEAD",     "OPTIONS", "TRACE", "get",    "P\xc3ST",
                                           "POST\xff", "BREW",    ""};

/* Strings that have broken parsers before: invalid UTF-8, cut characters, escapes, sizes. */
static void fuzz_nasty(buf_t *b, uint64_t *rs, bool in_path)
{
    switch (rnd_in(rs, 0, 15)) {
    case 0:
        buf_str(b, "%ff");
        break;
    case 1:
        buf_str(b, "\xff\xfe");
        break;
    case 2:
        buf_str(b, "\xc3");
        break;
    case 3:
        buf_str(b, "%c3%28");
        break;
    case 4:
        buf_str(b, "\xc0\xaf\xed\xa0\x80");
        break;
    case 5:
        for (int i = rnd_in(rs, 100, 700); i > 0; i--)
            buf_str(b, "\xc3\xa9");
        break;
    case 6:
        for (int i = rnd_in(rs, 100, 700); i > 0; i--)
            buf_str(b, "%c3%a9");
        break;
    case 7:
        for (int i = rnd_in(rs, 200, 9000); i > 0; i--)
            buf_str(b, "a");
        break;
    case 8:
        buf_str(b, "%00");
        break;
    case 9:
        buf_str(b, in_path ? "%2e%2e%2f" : "\\u0000\\ud800");
        break;
    case 10:
        buf_str(b, "\xf0\x9f\x92");
        break;
    case 11:
        buf_str(b, "%");
        break;
    case 12:
        buf_str(b, in_path ? "{id}" : "\\");
        break;
    case 13:
        for (int i = rnd_in(rs, 1, 80); i > 0; i--) {
            char ch = (char)rnd_in(rs, 1, 255);
            if (in_path && (ch == ' ' || ch == '\r' || ch == '\n' || ch == '?'))
                ch = 'x';
            buf_add(b, &ch, 1);
        }
        break;
    case 14:
        buf_str(b, "00000000-0000-4000-8000-000000000000");
        break;
    default:
        buf_str(b, "\xe2\x80\xae\xef\xbf\xbf");
        break;
    }
}

/* A path from the route table, its parameter real or not, sometimes bent. */
static void fuzz_path(buf_t *b, uint64_t *rs, const fuzz_env_t *f, const char **route)
{
    int nr = (int)(sizeof fuzz_routes / sizeof fuzz_routes[0]);
    const char *r = fuzz_routes[rnd_in(rs, 0, nr - 1)];
    *route = r;
    if (rnd_in(rs, 0, 9) == 0) { /* anything at all */
        buf_str(b, "/");
        fuzz_nasty(b, rs, true);
        return;
    }
    size_t head = strcspn(r, "{");
    buf_add(b, r, head);
    const char *brace = r[head] ? r + head : NULL;
    if (brace) {
        static const char *const real[] = {"star1", "reader1", "heat1", "soak-assay", "c1"};
        int pick = rnd_in(rs, 0, 3);
        if (pick == 0)
            buf_str(b, f->run_id);
        else if (pick == 1)
            buf_str(b, real[rnd_in(rs, 0, 4)]);
        else
            fuzz_nasty(b, rs, true);
        buf_str(b, strchr(brace, '}') + 1);
    }
    switch (rnd_in(rs, 0, 7)) {
    case 0:
        buf_str(b, "/");
        break;
    case 1:
        buf_str(b, "/");
        fuzz_nasty(b, rs, true);
        break;
    case 2:
        buf_str(b, "?limit=");
        fuzz_nasty(b, rs, true);
        buf_str(b, "&after=");
        fuzz_nasty(b, rs, true);
        buf_str(b, "&state=");
        fuzz_nasty(b, rs, true);
        break;
    case 3:
        buf_str(b, "?state=paused&limit=2&after=x");
        break;
    default:
        break;
    }
}

/* A JSON body for the route, mutated; or bytes. */
static void fuzz_body(buf_t *b, uint64_t *rs, const char *route)
{
    const char *base = "{}";
    int nb = (int)(sizeof fuzz_bodies / sizeof fuzz_bodies[0]);
    for (int i = 0; i < nb; i++) {
        size_t rl = strlen(route), tl = strlen(fuzz_bodies[i].tail);
        if (rl >= tl && strcmp(route + rl - tl, fuzz_bodies[i].tail) == 0)
            base = fuzz_bodies[i].body;
    }
    switch (rnd_in(rs, 0, 7)) {
    case 0:
        buf_str(b, base);
        return;
    case 1: /* cut anywhere */
        buf_add(b, base, (size_t)rnd_in(rs, 0, (int)strlen(base)));
        return;
    case 2:
        fuzz_nasty(b, rs, false);
        return;
    case 3: /* nested deep */
        for (int i = rnd_in(rs, 10, 5000), j = i; j > 0; j--)
            buf_str(b, "[");
        return;
    default:
        break;
    }
    /* every string value, or one, replaced by a nasty one; numbers by odd ones */
    bool all = rnd_in(rs, 0, 1);
    int which = rnd_in(rs, 0, 12), k = 0;
    for (const char *p = base; *p;) {
        if (*p == '"') {
            const char *q = strchr(p + 1, '"');
            if (!q)
                break;
            bool value = q[1] != ':';
            if (value && (all || k++ == which)) {
                buf_str(b, "\"");
                fuzz_nasty(b, rs, false);
                buf_str(b, "\"");
            } else {
                buf_add(b, p, (size_t)(q - p + 1));
            }
            p = q + 1;
        } else if ((*p >= '0' && *p <= '9') && rnd_in(rs, 0, 2) == 0) {
            static const char *const nums[] = {
                "1e999", "-1", "18446744073709551616", "0.0000001", "\"5\"", "null", "true"};
            buf_str(b, nums[rnd_in(rs, 0, 6)]);
            while ((*p >= '0' && *p <= '9') || *p == '.')
                p++;
        } else {
            buf_add(b, p, 1);
            p++;
        }
    }
    if (rnd_in(rs, 0, 3) == 0) { /* and an unknown member */
        b->n = b->n && b->p[b->n - 1] == '}' ? b->n - 1 : b->n;
        buf_str(b, ",\"");
        fuzz_nasty(b, rs, false);
        buf_str(b, "\":1}");
    }
}

/* One whole request: request line, headers, body, framing. */
static void fuzz_request(buf_t *req, uint64_t *rs, const fuzz_env_t *f)
{
    int nm = (int)(sizeof fuzz_methods / sizeof fuzz_methods[0]);
    const char *method = rnd_in(rs, 0, 2) ? (rnd_in(rs, 0, 1) ? "GET" : "POST")
                                          : fuzz_methods[rnd_in(rs, 0, nm - 1)];
    const char *route;
    buf_t path = {0}, body = {0};
    fuzz_path(&path, rs, f, &route);
    bool has_body = strcmp(method, "GET") != 0 ? rnd_in(rs, 0, 5) != 0 : rnd_in(rs, 0, 9) == 0;
    if (has_body)
        fuzz_body(&body, rs, route);
    static const char *const versions[] = {"HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""};
    buf_fmt(req, "%s %s %s\r\n", method, path.p,
            rnd_in(rs, 0, 15) ? "HTTP/1.1" : versions[rnd_in(rs, 0, 4)]);
    if (rnd_in(rs, 0, 20))
        buf_str(req, "Host: 127.0.0.1\r\n");
    switch (rnd_in(rs, 0, 9)) {
    case 0:
        break;
    case 1:
        buf_str(req, "Authorization: Bearer wrong-token-000\r\n");
        break;
    case 2:
        buf_str(req, "Authorization: Bearer ");
        fuzz_nasty(req, rs, true);
        buf_str(req, "\r\n");
        break;
    case 3:
        buf_str(req, "Authorization: Basic YTpi\r\n");
        break;
    default:
        buf_str(req, "Authorization: Bearer " TOKEN_ADMIN "\r\n");
        break;
    }
    if (has_body) {
        static const char *const types[] = {"application/json", "application/json; charset=utf-8",
                                            "text/plain", "application/problem+json", "\xff"};
        if (rnd_in(rs, 0, 9))
            buf_fmt(req, "Content-Type: %s\r\n", types[rnd_in(rs, 0, 4)]);
    }
    if (rnd_in(rs, 0, 3) == 0) {
        buf_str(req, "Idempotency-Key: ");
        fuzz_nasty(req, rs, true);
        buf_str(req, "\r\n");
    }
    for (int i = rnd_in(rs, 0, 3) == 0 ? rnd_in(rs, 1, 120) : 0; i > 0; i--) {
        buf_fmt(req, "X-Fuzz-%d: ", i);
        fuzz_nasty(req, rs, true);
        buf_str(req, "\r\n");
    }
    if (has_body && rnd_in(rs, 0, 9) == 0) { /* chunked, sizes right or not */
        buf_str(req, "Transfer-Encoding: chunked\r\n\r\n");
        static const char *const sizes[] = {"%zx", "%zX;ext=1", "FFFFFFFFFFFFFFFF", "-1", "zz"};
        int which = rnd_in(rs, 0, 4);
        if (which < 2)
            buf_fmt(req, which ? "%zX;ext=1" : "%zx", body.n);
        else
            buf_str(req, sizes[which]);
        buf_str(req, "\r\n");
        buf_add(req, body.p ? body.p : "", body.n);
        buf_str(req, "\r\n0\r\n\r\n");
    } else if (has_body) {
        long long cl = (long long)body.n;
        switch (rnd_in(rs, 0, 15)) {
        case 0:
            cl = cl > 0 ? cl - 1 : 0;
            break;
        case 1:
            cl = cl + 10;
            break;
        case 2:
            cl = -1;
            break;
        default:
            break;
        }
        buf_fmt(req, "Content-Length: %lld\r\n\r\n", cl);
        buf_add(req, body.p ? body.p : "", body.n);
    } else {
        buf_str(req, "\r\n");
    }
    free(path.p);
    free(body.p);
}

/* Whether resp holds a whole answer: its head, then Content-Length bytes or the last chunk (the
 * server may keep a half-closed connection open for a while after answering). */
static bool fuzz_answer_whole(const buf_t *resp, bool head_only)
{
    const char *end = resp->p ? strstr(resp->p, "\r\n\r\n") : NULL;
    if (!end)
        return false;
    int st = 0;
    sscanf(resp->p, "HTTP/1.%*d %d", &st);
    if (head_only || st == 204 || st == 304 || (st >= 100 && st < 200))
        return true;
    size_t body = resp->n - (size_t)(end + 4 - resp->p);
    for (const char *h = strstr(resp->p, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
        if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
            return body >= (size_t)strtoull(h + 17, NULL, 10);
        if (strncasecmp(h + 2, "Transfer-Encoding: chunked", 26) == 0)
            return resp->n >= 5 && memcmp(resp->p + resp->n - 5, "0\r\n\r\n", 5) == 0;
    }
    return false;
}

/* Sends one request on its own connection, half-closes, and reads the answer's status (0: no
 * answer, -1: no connection). */
static int fuzz_send(const h_daemon_t *d, const char *bytes, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer (413, 400) and close before the whole request */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    buf_t resp = {0};
    bool head_only = len >= 5 && memcmp(bytes, "HEAD ", 5) == 0;
    for (long long end = h_now_ms() + FUZZ_ANSWER_MS; h_now_ms() < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0)
            break;
        buf_add(&resp, tmp, (size_t)n);
        if (fuzz_answer_whole(&resp, head_only))
            break;
    }
    close(fd);
    int st = 0;
    if (!resp.p || sscanf(resp.p, "HTTP/1.%*d %d", &st) != 1)
        st = 0;
    free(resp.p);
    return st;
}

/* Sends the request; whether the daemon ended meanwhile (then its wait status in *how). */
static bool fuzz_one(fuzz_env_t *f, const char *bytes, size_t len, int *status, int *how)
{
    *status = fuzz_send(&f->d, bytes, len);
    int waited = *status > 0 ? 0 : FUZZ_DEATH_MS;
    for (long long end = h_now_ms() + waited;; h_sleep_ms(20)) {
        if (h_daemon_exited(&f->d, how) == 1)
            return true;
        if (h_now_ms() >= end)
            return false;
    }
}

static void save_request(const char *bytes, size_t len, int k, const fuzz_env_t *f, int how)
{
    char path[400], why[64], line[700];
    snprintf(path, sizeof path, "%s/fuzz-abort-%03d.req", cfg.out, k);
    FILE *o = fopen(path, "wb");
    if (!o || fwrite(bytes, 1, len, o) != len || fclose(o))
        die("cannot write %s", path);
    log_reason(&f->d, log_from, line, sizeof line);
    snprintf(path, sizeof path, "%s/fuzz-aborts.txt", cfg.out);
    o = fopen(path, "a");
    if (o) {
        /* the request line, printable */
        fprintf(o, "fuzz-abort-%03d.req: %s: ", k, status_text(how, why, sizeof why));
        for (size_t i = 0; i < len && i < 160 && bytes[i] != '\r'; i++)
            fprintf(o,
                    (unsigned char)bytes[i] < 0x20 || (unsigned char)bytes[i] >= 0x7f ? "\\x%02x"
                                                                                      : "%c",
                    (unsigned char)bytes[i]);
        fprintf(o, " | %s\n", line);
        fclose(o);
    }
}

static bool campaign_fuzz(uint64_t *rs)
{
    long long t0 = h_now_ms();
    fuzz_env_t f;
    fuzz_env_start(&f);
    int aborts = 0, unanswered = 0, refused_conn = 0, saved = 0, by_class[6] = {0};
    for (int i = 0; i < cfg.fuzz; i++) {
        buf_t req = {0};
        fuzz_request(&req, rs, &f);
        int st, how;
        if (fuzz_one(&f, req.p, req.n, &st, &how)) {
            aborts++;
            if (saved < SAVE_MAX)
                save_request(req.p, req.n, ++saved, &f, how);
            if (restart(&f.d))
                die("labloopd (fuzz) does not start again (%s)", f.d.log);
        } else if (st == 0) {
            unanswered++;
        } else if (st < 0) {
            refused_conn++;
        } else {
            by_class[st / 100 < 6 ? st / 100 : 0]++;
        }
        free(req.p);
        if ((i + 1) % 500 == 0)
            fprintf(stderr, "soak: fuzz: %d requests, %d aborts\n", i + 1, aborts);
    }
    /* still serving after all of it */
    char *resp = NULL;
    int health = h_http(f.d.url, "GET", "/healthz", NULL, NULL, &resp);
    free(resp);
    fuzz_env_stop(&f);
    printf("soak: fuzz   requests=%d aborts=%d unanswered=%d no_connection=%d 2xx=%d 4xx=%d "
           "5xx=%d healthz_after=%d saved=%d (%s/fuzz-abort-*.req) seconds=%.0f\n",
           cfg.fuzz, aborts, unanswered, refused_conn, by_class[2], by_class[4], by_class[5],
           health, saved, cfg.out, (double)(h_now_ms() - t0) / 1000);
    fflush(stdout);
    return aborts == 0 && health == 200;
}

/* soak --replay FILE...: each saved request against a fresh daemon. */
static int replay(int n, char **files)
{
    fuzz_env_t f;
    fuzz_env_start(&f);
    int aborted = 0;
    for (int i = 0; i < n; i++) {
        FILE *in = fopen(files[i], "rb");
        if (!in)
            die("cannot read %s", files[i]);
        buf_t req = {0};
        char tmp[65536];
        size_t got;
        while ((got = fread(tmp, 1, sizeof tmp, in)) > 0)
            buf_add(&req, tmp, got);
        fclose(in);
        int st, how;
        char why[64];
        if (fuzz_one(&f, req.p ? req.p : "", req.n, &st, &how)) {
            aborted++;
            printf("%s: labloopd ended: %s\n", files[i], status_text(how, why, sizeof why));
            if (restart(&f.d))
                die("labloopd does not start again");
        } else {
            printf("%s: answered %d\n", files[i], st);
        }
        free(req.p);
    }
    fuzz_env_stop(&f);
    return aborted ? 1 : 0;
}

int main(int argc, char **argv)
{
    setenv("LABLOOPD", LABLOOPD_PATH, 0);
    setenv("LABLOOP_SIM", LABLOOP_SIM_PATH, 0);
    /* an aborting daemon leaves no core behind: its request is what is kept */
    struct rlimit nocore = {0, 0};
    setrlimit(RLIMIT_CORE, &nocore);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (argc > 1 && strcmp(argv[1], "--replay") == 0) {
        if (argc < 3)
            usage();
        return replay(argc - 2, argv + 2);
    }
    parse_args(argc, argv);
    if (mkdir(cfg.out, 0755) != 0 && errno != EEXIST)
        die("cannot make %s: %s", cfg.out, strerror(errno));
    char old[700];
    snprintf(old, sizeof old, "rm -f '%s'/fuzz-abort-*.req '%s'/fuzz-aborts.txt", cfg.out, cfg.out);
    if (h_run(old, NULL, 0) != 0)
        die("cannot clear %s", cfg.out);
    uint64_t rs = (uint64_t)cfg.seed * 0x9e3779b97f4a7c15ULL + 1;
    bool ok = true;
    int ran = 0;
    if (cfg.kills || cfg.duration_s || cfg.outage_s) {
        cell_t c;
        cell_start(&c);
        if (cfg.kills || cfg.duration_s)
            ok &= campaign_kill9(&c, &rs), ran++;
        if (cfg.outage_s)
            ok &= campaign_outage(&c), ran++;
        cell_stop(&c);
    }
    if (cfg.fuzz)
        ok &= campaign_fuzz(&rs), ran++;
    printf("soak: %s: %d campaign%s, %s\n", ok ? "ok" : "FAILED", ran, ran == 1 ? "" : "s",
           ok ? "nothing lost, duplicated or aborted"
              : "something was lost, duplicated, refused or aborted (see the lines above)");
    curl_global_cleanup();
    return ok ? 0 : 1;
}
