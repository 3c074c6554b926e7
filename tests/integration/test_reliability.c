/* Reliability, with real PostgreSQL and mosquitto: nothing acknowledged is lost
 * and nothing arrives twice where "twice" would be wrong, across kill -9, a
 * PostgreSQL outage and a broker outage; bad requests get their precise error
 * and cost nothing else.
 *
 * MQTT is observed with mosquitto_sub as a separate process: it reconnects and
 * subscribes again on its own after a broker restart. The project's broker
 * keeps no sessions across a restart, so during the broker outage the daemon is
 * held (SIGSTOP) until the subscriber is back, and only the daemon's own outbox
 * can bring the burst through. Arrival is awaited with generous deadlines;
 * nothing here is timed. */
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

enum { ARRIVAL_MS = 60000, BURST = 1000 };

/* Sinks retry quickly here, so an outage ends in seconds rather than at the
 * default backoff. */
static const char *FAST_RETRY = "[postgres]\nretry_max = 1\n\n[mqtt]\nretry_max = 1\n";
static const char *FAST_RETRY_PG = "[postgres]\nretry_max = 1\n";
static const char *FAST_RETRY_MQ = "[mqtt]\nretry_max = 1\n";

/* ---- small helpers ---- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *s = malloc(cap);
    while ((got = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            s = realloc(s, cap *= 2);
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

static char *submit_body(int i)
{
    char *b = NULL;
    if (asprintf(&b,
                 "{\"workflow\":\"elisa-demo\",\"plate\":\"P%05d\",\"priority\":"
                 "\"normal\"}",
                 i) < 0)
        abort();
    return b;
}

/* POST /v1/runs; returns the status and, on 201, the run's id (malloc'd) in
 * *id. */
static int post_run(const h_daemon_t *d, const char *body, char **id)
{
    char *resp = NULL;
    int st = h_http(d->url, "POST", "/v1/runs", NULL, body, &resp);
    *id = NULL;
    if (st == 201) {
        json_t *doc = json_loads(resp, 0, NULL);
        const char *s = doc ? json_string_value(json_object_get(doc, "id")) : NULL;
        if (s)
            *id = strdup(s);
        json_decref(doc);
    } else {
        fprintf(stderr, "POST /v1/runs: %d %s\n", st, resp ? resp : "");
    }
    free(resp);
    return st;
}

static char *must_submit(const h_daemon_t *d, int i)
{
    char *body = submit_body(i), *id = NULL;
    assert_int_equal(post_run(d, body, &id), 201);
    assert_non_null(id);
    free(body);
    return id;
}

static int run_count(const h_daemon_t *d)
{
    char *resp = NULL;
    int st = h_http(d->url, "GET", "/v1/runs", NULL, NULL, &resp);
    assert_int_equal(st, 200);
    json_t *doc = json_loads(resp, 0, NULL);
    assert_non_null(doc);
    int n = (int)json_array_size(json_object_get(doc, "runs"));
    json_decref(doc);
    free(resp);
    return n;
}

static void expect_healthy(const h_daemon_t *d)
{
    char *resp = NULL;
    assert_int_equal(h_http(d->url, "GET", "/healthz", NULL, NULL, &resp), 200);
    free(resp);
}

/* "id::text in ('a','b',...)" for the ids given */
static char *id_list_sql(char **ids, int n)
{
    size_t cap = (size_t)n * 40 + 16, len = 0;
    char *s = malloc(cap);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s'%s'", i ? "," : "", ids[i]);
    return s;
}

/* ---- an MQTT observer: mosquitto_sub as a child process ---- */

typedef struct sub {
    pid_t pid;
    char out[300];
} sub_t;

/* Waits (20 s at most) until the subscriber has been subscribed n times in all.
 */
static void sub_wait_subacks(const sub_t *s, int n)
{
    long long end = h_now_ms() + 20000;
    for (;;) {
        char *text = slurp(s->out);
        int k = 0;
        for (const char *p = text; p && (p = strstr(p, "received SUBACK")); p++)
            k++;
        free(text);
        if (k >= n)
            return;
        assert_true(h_now_ms() < end);
        h_sleep_ms(50);
    }
}

static void sub_start(sub_t *s, const h_mqtt_t *mq, const char *dir, const char *filter,
                      const char *client_id)
{
    snprintf(s->out, sizeof s->out, "%s/%s.out", dir, client_id);
    char port[16];
    snprintf(port, sizeof port, "%d", mq->port);
    int fd = open(s->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    pid_t parent = getpid();
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        /* -d prints each SUBACK, which is what we wait for; stdbuf, because mosquitto_sub
         * writing to a file would hold its lines until it exits. */
        execlp("stdbuf", "stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-q", "1",
               "-i", client_id, "-v", "-d", "-t", filter, (char *)NULL);
        _exit(127);
    }
    close(fd);
    sub_wait_subacks(s, 1);
}

static void sub_stop(sub_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

typedef struct msg {
    char topic[256];
    long long seq; /* -1 when the payload has none */
    char cell[64];
    bool reason; /* a run's state that gives its waiting reason (a later write than its ack) */
} msg_t;

/* Every message the subscriber printed ("TOPIC PAYLOAD" lines); returns the
 * count. */
static int sub_messages(const sub_t *s, msg_t **out)
{
    char *text = slurp(s->out);
    int n = 0, cap = 1024;
    msg_t *v = malloc(sizeof *v * (size_t)cap);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, "labloop/", 8) != 0)
            continue;
        char *sp = strchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        if (n == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        msg_t *m = &v[n++];
        snprintf(m->topic, sizeof m->topic, "%s", line);
        json_t *doc = json_loads(sp + 1, 0, NULL);
        json_t *seq = json_object_get(doc, "seq");
        m->seq = json_is_integer(seq) ? (long long)json_integer_value(seq) : -1;
        const char *cell = json_string_value(json_object_get(doc, "cell"));
        snprintf(m->cell, sizeof m->cell, "%s", cell ? cell : "");
        m->reason = json_object_get(doc, "waiting_reason") != NULL;
        json_decref(doc);
    }
    free(text);
    *out = v;
    return n;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* How many distinct seqs arrived on runs/+/state, one per acknowledged run (its waiting reason,
 * written after, is not counted). */
static int distinct_state_seqs(const sub_t *s)
{
    msg_t *m;
    int n = sub_messages(s, &m), k = 0, distinct = 0;
    long long *seqs = malloc(sizeof *seqs * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        size_t tl = strlen(m[i].topic);
        if (m[i].seq > 0 && !m[i].reason && tl > 6 && strcmp(m[i].topic + tl - 6, "/state") == 0 &&
            strstr(m[i].topic, "/runs/"))
            seqs[k++] = m[i].seq;
    }
    qsort(seqs, (size_t)k, sizeof *seqs, cmp_ll);
    for (int i = 0; i < k; i++)
        distinct += i == 0 || seqs[i] != seqs[i - 1];
    free(seqs);
    free(m);
    return distinct;
}

/* ---- (a) kill -9 right after the acknowledgement ---- */

static void test_kill9_after_ack(void **state)
{
    h_pg_t pg;
    h_mqtt_t mq;
    h_daemon_t d;
    sub_t sub = {0};
    enum { ROUNDS = 5 };
    char *ids[ROUNDS];

    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_daemon_start(&d, &pg, &mq, FAST_RETRY), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);
    sub_start(&sub, &mq, d.dir, "labloop/v1/+/+/runs/+/state", "rel-kill9");

    for (int r = 0; r < ROUNDS; r++) {
        ids[r] = must_submit(&d, r);
        h_daemon_kill9(&d); /* the 201 is in hand: the run must survive this */
        assert_int_equal(h_daemon_restart(&d), 0);
        char path[128], *resp = NULL;
        snprintf(path, sizeof path, "/v1/runs/%s", ids[r]);
        assert_int_equal(h_http(d.url, "GET", path, NULL, NULL, &resp), 200);
        json_t *doc = json_loads(resp, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(doc, "id")), ids[r]);
        json_decref(doc);
        free(resp);
    }

    char sql[256];
    for (int r = 0; r < ROUNDS; r++) {
        /* PostgreSQL: arrives, exactly once. */
        snprintf(sql, sizeof sql, "select count(*) from labloop.runs where id::text = '%s'",
                 ids[r]);
        long long end = h_now_ms() + ARRIVAL_MS, n;
        while ((n = h_pg_count(&pg, sql)) < 1 && h_now_ms() < end)
            h_sleep_ms(200);
        assert_int_equal(n, 1);

        /* MQTT: at least once, every copy with the same seq (the consumer's dedupe
         * key). */
        char topic[200];
        snprintf(topic, sizeof topic, "/runs/%s/state", ids[r]);
        long long seq = -1;
        int copies = 0;
        end = h_now_ms() + ARRIVAL_MS;
        while (copies == 0 && h_now_ms() < end) {
            msg_t *m;
            int k = sub_messages(&sub, &m);
            for (int i = 0; i < k; i++) {
                if (!strstr(m[i].topic, topic) || m[i].reason)
                    continue;
                assert_true(m[i].seq > 0);
                assert_true(m[i].cell[0] != '\0');
                if (seq < 0)
                    seq = m[i].seq;
                assert_int_equal(m[i].seq, seq);
                copies++;
            }
            free(m);
            if (copies == 0)
                h_sleep_ms(200);
        }
        fprintf(stderr, "run %s: seq %lld, %d MQTT cop%s\n", ids[r], seq, copies,
                copies == 1 ? "y" : "ies");
        assert_true(copies >= 1);
    }
    /* Still exactly once after everything settled. */
    char *list = id_list_sql(ids, ROUNDS);
    char *q = NULL;
    assert_true(asprintf(&q, "select count(*) from labloop.runs where id::text in (%s)", list) > 0);
    assert_int_equal(h_pg_count(&pg, q), ROUNDS);
    free(q);
    free(list);

    assert_int_equal(h_daemon_stop(&d), 0);
    sub_stop(&sub);
    for (int r = 0; r < ROUNDS; r++)
        free(ids[r]);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
}

/* ---- (b) PostgreSQL down during a burst ---- */

static void test_pg_outage(void **state)
{
    h_pg_t pg;
    h_daemon_t d;
    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_daemon_start(&d, &pg, NULL, FAST_RETRY_PG), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);

    /* The writer is connected (migrations applied, one row through) before the
     * outage. */
    char *first = must_submit(&d, 0);
    char sql[256];
    snprintf(sql, sizeof sql, "select count(*) from labloop.runs where id::text = '%s'", first);
    long long end = h_now_ms() + ARRIVAL_MS;
    while (h_pg_count(&pg, sql) != 1 && h_now_ms() < end)
        h_sleep_ms(200);
    assert_int_equal(h_pg_count(&pg, sql), 1);

    assert_int_equal(h_pg_stop(&pg), 0);
    char **ids = calloc(BURST, sizeof *ids);
    for (int i = 0; i < BURST; i++)
        ids[i] = must_submit(&d, i + 1);
    expect_healthy(&d);
    assert_int_equal(h_pg_restart(&pg), 0);

    char *list = id_list_sql(ids, BURST);
    char *q_count = NULL, *q_distinct = NULL;
    assert_true(
        asprintf(&q_count, "select count(*) from labloop.runs where id::text in (%s)", list) > 0);
    assert_true(asprintf(&q_distinct,
                         "select count(distinct id) from labloop.runs where id::text in (%s)",
                         list) > 0);
    end = h_now_ms() + ARRIVAL_MS;
    long long n;
    while ((n = h_pg_count(&pg, q_count)) < BURST && h_now_ms() < end)
        h_sleep_ms(250);
    fprintf(stderr, "after the outage: %lld of %d runs in labloop.runs\n", n, BURST);
    assert_int_equal(n, BURST);
    assert_int_equal(h_pg_count(&pg, q_distinct), BURST);
    /* The whole table: the burst plus the first run, none twice. */
    assert_int_equal(h_pg_count(&pg, "select count(*) from labloop.runs"), BURST + 1);
    assert_int_equal(h_pg_count(&pg, "select count(distinct id) from labloop.runs"), BURST + 1);

    assert_int_equal(h_daemon_stop(&d), 0);
    free(q_count);
    free(q_distinct);
    free(list);
    for (int i = 0; i < BURST; i++)
        free(ids[i]);
    free(ids);
    free(first);
    h_daemon_destroy(&d);
    h_pg_destroy(&pg);
}

/* ---- (c) the broker down during a burst ---- */

static void test_broker_outage(void **state)
{
    h_mqtt_t mq;
    h_daemon_t d;
    sub_t sub = {0};
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_daemon_start(&d, NULL, &mq, FAST_RETRY_MQ), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);
    sub_start(&sub, &mq, d.dir, "labloop/v1/+/+/runs/+/state", "rel-broker");

    /* One message through before the outage: the bridge is connected. */
    char *first = must_submit(&d, 0);
    long long end = h_now_ms() + ARRIVAL_MS;
    while (distinct_state_seqs(&sub) < 1 && h_now_ms() < end)
        h_sleep_ms(100);
    assert_int_equal(distinct_state_seqs(&sub), 1);

    assert_int_equal(h_mqtt_stop(&mq), 0);
    for (int i = 0; i < BURST; i++)
        free(must_submit(&d, i + 1));
    expect_healthy(&d);
    /* The broker comes back with no sessions: hold the daemon until the
     * subscriber is back. */
    assert_int_equal(kill(d.pid, SIGSTOP), 0);
    assert_int_equal(h_mqtt_restart(&mq), 0);
    sub_wait_subacks(&sub, 2);
    assert_int_equal(kill(d.pid, SIGCONT), 0);

    end = h_now_ms() + ARRIVAL_MS;
    int n;
    while ((n = distinct_state_seqs(&sub)) < BURST + 1 && h_now_ms() < end)
        h_sleep_ms(250);
    fprintf(stderr, "after the outage: %d of %d distinct seqs on runs/+/state\n", n, BURST + 1);
    assert_int_equal(n, BURST + 1);

    assert_int_equal(h_daemon_stop(&d), 0);
    sub_stop(&sub);
    free(first);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
}

/* ---- (d) bad input ---- */

/* Checks status and that the body is problem+json naming `path` (NULL: any) in
 * errors. */
/* ---- (d) the state_dir wiped between two lives of the cell ---- */

static void test_wiped_state_dir(void **state)
{
    h_pg_t pg;
    h_mqtt_t mq;
    h_daemon_t d;
    sub_t sub = {0};
    enum { N = 10 };
    char *ids[2 * N], sql[256], path[300];

    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_daemon_start(&d, &pg, &mq, FAST_RETRY), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);
    sub_start(&sub, &mq, d.dir, "labloop/v1/+/+/runs/+/state", "rel-wiped");
    for (int i = 0; i < N; i++)
        ids[i] = must_submit(&d, i);
    assert_int_equal(h_pg_count_wait(&pg, "select count(*) from labloop.runs", N, ARRIVAL_MS), N);
    assert_int_equal(h_daemon_stop(&d), 0);
    long long life1 = h_pg_count(&pg, "select max(seq) from labloop.events");
    assert_true(life1 >= N);

    /* A replaced disk: the same config, an empty state_dir, the same database. */
    snprintf(path, sizeof path, "%s/state", d.dir);
    h_rmtree(path);
    assert_int_equal(h_daemon_restart(&d), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0); /* the store had it */
    for (int i = N; i < 2 * N; i++)
        ids[i] = must_submit(&d, i);
    char *list = id_list_sql(ids, 2 * N);
    char *q = NULL;
    assert_true(asprintf(&q, "select count(*) from labloop.runs where id::text in (%s)", list) > 0);
    assert_int_equal(h_pg_count_wait(&pg, q, 2 * N, ARRIVAL_MS), 2 * N);
    free(q);
    free(list);
    /* Nothing of the first life overwritten: its rows are where they were, the second life's
     * came after them. */
    snprintf(sql, sizeof sql, "select count(*) from labloop.events where seq <= %lld", life1);
    assert_int_equal(h_pg_count(&pg, sql), life1);
    snprintf(sql, sizeof sql, "select count(*) from labloop.runs where seq <= %lld", life1);
    assert_int_equal(h_pg_count(&pg, sql), N);
    assert_int_equal(h_metric(&d, "labloop_store_rebases_total"), 1);
    assert_int_equal(h_metric(&d, "labloop_store_rebase_onto_seq"), life1);

    /* MQTT: each run of the second life arrives under a seq the first life never used, so a
     * consumer that dedupes by (cell, seq) keeps it. */
    for (int i = N; i < 2 * N; i++) {
        char topic[200];
        snprintf(topic, sizeof topic, "/runs/%s/state", ids[i]);
        bool fresh = false;
        long long end = h_now_ms() + ARRIVAL_MS;
        while (!fresh && h_now_ms() < end) {
            msg_t *m;
            int k = sub_messages(&sub, &m);
            for (int j = 0; j < k; j++)
                fresh |= strstr(m[j].topic, topic) && m[j].seq > life1;
            free(m);
            if (!fresh)
                h_sleep_ms(100);
        }
        assert_true(fresh);
    }
    assert_int_equal(h_daemon_stop(&d), 0);
    sub_stop(&sub);
    for (int i = 0; i < 2 * N; i++)
        free(ids[i]);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
}

static void expect_problem(const h_daemon_t *d, const char *body, int status, const char *path)
{
    char *resp = NULL;
    int st = h_http(d->url, "POST", "/v1/runs", NULL, body, &resp);
    fprintf(stderr, "%.60s%s -> %d %s\n", body, strlen(body) > 60 ? "..." : "", st,
            resp ? resp : "");
    assert_int_equal(st, status);
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), status);
    json_t *errs = json_object_get(doc, "errors");
    assert_true(json_array_size(errs) >= 1);
    if (path) {
        int found = 0;
        size_t i;
        json_t *e;
        json_array_foreach(errs, i, e)
        {
            const char *p = json_string_value(json_object_get(e, "path"));
            found += p && strcmp(p, path) == 0 && json_is_string(json_object_get(e, "message"));
        }
        if (!found)
            fprintf(stderr, "no error with path %s\n", path);
        assert_true(found);
    }
    json_decref(doc);
    free(resp);
}

/* Sends raw bytes, half-closes, and returns what came back (malloc'd, possibly
 * empty). */
static char *raw_exchange(const h_daemon_t *d, const char *bytes)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t len = strlen(bytes);
    assert_int_equal(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    shutdown(fd, SHUT_WR);
    size_t cap = 8192, n = 0;
    char *out = malloc(cap);
    long long end = h_now_ms() + 30000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 500);
        if (r > 0) {
            ssize_t got = recv(fd, out + n, cap - n - 1, 0);
            if (got <= 0)
                break;
            n += (size_t)got;
            if (n + 1 >= cap)
                break;
        } else if (r < 0 && errno != EINTR) {
            break;
        }
        assert_true(h_now_ms() < end); /* the server must end a half-closed exchange */
    }
    out[n] = '\0';
    close(fd);
    return out;
}

static void test_bad_input(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    assert_int_equal(h_workflow_example(d.url, "elisa-demo"), 0);
    int before = run_count(&d);

    /* Not JSON at all, and JSON cut short. */
    expect_problem(&d, "{\"workflow\": \"elisa-demo\", \"plate\": }", 400, NULL);
    expect_problem(&d, "{\"workflow\": \"elisa-demo\", \"pla", 400, NULL);
    expect_problem(&d, "", 400, NULL);
    /* Wrong types: every one named. */
    expect_problem(&d, "{\"workflow\": 5, \"plate\": true, \"priority\": \"high\"}", 422,
                   "/workflow");
    expect_problem(&d, "{\"workflow\": 5, \"plate\": true, \"priority\": \"high\"}", 422, "/plate");
    expect_problem(&d, "[1, 2, 3]", 422, NULL);
    /* Unknown fields. */
    expect_problem(&d, "{\"workflow\": \"elisa-demo\", \"plate\": \"P1\", \"colour\": \"red\"}",
                   422, "/colour");

    /* A 10 MB body is refused as too large. */
    size_t big = 10 * 1024 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    memcpy(huge, "{\"workflow\":\"", 13);
    memcpy(huge + big - 2, "\"}", 2);
    huge[big] = '\0';
    char *resp = NULL;
    int st = h_http(d.url, "POST", "/v1/runs", NULL, huge, &resp);
    fprintf(stderr, "10 MB body -> %d %.200s\n", st, resp ? resp : "");
    assert_int_equal(st, 413);
    free(resp);
    free(huge);

    /* HTTP-level truncation: a body shorter than its Content-Length, then the
     * client half-closes; and a request cut inside its headers. Either no answer
     * or a 400, and nothing stored. */
    const char *cut_body = "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                           "{\"workflow\":\"elisa-demo\",\"pla";
    const char *cut_head = "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty";
    const char *cuts[] = {cut_body, cut_head};
    for (int i = 0; i < 2; i++) {
        char *got = raw_exchange(&d, cuts[i]);
        fprintf(stderr, "truncated request %d -> %.80s\n", i, *got ? got : "(closed)");
        assert_true(*got == '\0' || strncmp(got, "HTTP/1.1 400", 12) == 0);
        free(got);
    }

    /* Nothing of the above was stored, and the daemon still serves normally. */
    assert_int_equal(run_count(&d), before);
    free(must_submit(&d, 1));
    assert_int_equal(run_count(&d), before + 1);
    expect_healthy(&d);
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),       cmocka_unit_test(test_kill9_after_ack),
        cmocka_unit_test(test_pg_outage),       cmocka_unit_test(test_broker_outage),
        cmocka_unit_test(test_wiped_state_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
