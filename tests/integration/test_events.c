/* GET /v1/events against a real labloopd: the event format, kind filters, resuming with
 * Last-Event-ID after a reconnect and across restarts (the rows kept by events_keep), reset for
 * ids older than what is kept, the limits (bad parameters, too many streams, a client that never
 * reads), and `labloop watch` printing the events of a run. The streams are read with raw
 * sockets over HTTP/1.0, so the body is the event stream itself, byte for byte. */
#include "tests/harness/harness.h"
#include "core/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#define SSE_BUF (512 * 1024)

typedef struct sse {
    int fd;
    int status;
    char head[4096];
    char *buf;
    size_t len;
} sse_t;

typedef struct ev {
    long long id; /* -1 when the event had no id */
    char kind[64];
    char *data; /* malloc'd */
} ev_t;

/* Connects and sends the request; unless raw, reads the head (status, headers). rcvbuf > 0 makes
 * the client's receive buffer that small (a client that will not read). */
static int sse_open(sse_t *s, const h_daemon_t *d, const char *path, const char *headers,
                    int rcvbuf)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    char req[2048];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n", path,
                     headers ? headers : "");
    if (send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    s->buf = malloc(SSE_BUF);
    if (rcvbuf > 0)
        return 0;
    size_t hl = 0;
    long long end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t got = recv(s->fd, s->buf + s->len, SSE_BUF - s->len - 1, 0);
        if (got <= 0)
            break;
        s->len += (size_t)got;
        s->buf[s->len] = 0;
        char *e = strstr(s->buf, "\r\n\r\n");
        if (!e)
            continue;
        hl = (size_t)(e - s->buf) + 4;
        snprintf(s->head, sizeof s->head, "%.*s", (int)hl, s->buf);
        memmove(s->buf, s->buf + hl, s->len - hl);
        s->len -= hl;
        s->buf[s->len] = 0;
        sscanf(s->head, "HTTP/1.%*d %d", &s->status);
        return 0;
    }
    return -1;
}

static void sse_close(sse_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->buf);
    s->fd = -1;
    s->buf = NULL;
}

static void ev_free(ev_t *e)
{
    free(e->data);
    e->data = NULL;
}

/* The next event with data (comments and retry-only blocks are skipped): 1, 0 when none came
 * within ms, -1 when the stream ended. */
static int sse_next(sse_t *s, ev_t *e, int ms)
{
    long long end = h_now_ms() + ms;
    memset(e, 0, sizeof *e);
    e->id = -1;
    for (;;) {
        char *blk = strstr(s->buf, "\n\n");
        while (blk) {
            size_t bl = (size_t)(blk - s->buf) + 2;
            char *text = strndup(s->buf, bl);
            memmove(s->buf, s->buf + bl, s->len - bl);
            s->len -= bl;
            s->buf[s->len] = 0;
            for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "id: ", 4) == 0)
                    e->id = atoll(line + 4);
                else if (strncmp(line, "event: ", 7) == 0)
                    snprintf(e->kind, sizeof e->kind, "%s", line + 7);
                else if (strncmp(line, "data: ", 6) == 0) {
                    assert_null(e->data); /* one data line per event */
                    e->data = strdup(line + 6);
                }
            }
            free(text);
            if (e->data)
                return 1;
            e->id = -1;
            e->kind[0] = 0;
            blk = strstr(s->buf, "\n\n");
        }
        long long left = end - h_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, (int)(left < 100 ? left : 100)) <= 0)
            continue;
        ssize_t got = recv(s->fd, s->buf + s->len, SSE_BUF - s->len - 1, 0);
        if (got <= 0)
            return -1;
        s->len += (size_t)got;
        s->buf[s->len] = 0;
    }
}

/* The next event must be (id, kind); its data is returned parsed (caller frees). */
static json_t *expect_event(sse_t *s, long long id, const char *kind)
{
    ev_t e;
    int r = sse_next(s, &e, 10000);
    if (r != 1)
        fail_msg("no event %lld (%s) came: %d", id, kind, r);
    if (e.id != id || strcmp(e.kind, kind) != 0)
        fail_msg("expected event %lld %s, got %lld %s: %s", id, kind, e.id, e.kind, e.data);
    json_error_t jerr;
    json_t *j = json_loads(e.data, 0, &jerr);
    if (!j)
        fail_msg("data is not JSON (%s): %s", jerr.text, e.data);
    ev_free(&e);
    return j;
}

static void store_workflow(const h_daemon_t *d, const char *name)
{
    assert_int_equal(h_workflow_example(d->url, name), 0);
}

static char *submit_run(const h_daemon_t *d, const char *workflow)
{
    char body[256];
    snprintf(body, sizeof body, "{\"workflow\":\"%s\",\"plate\":\"P-1\"}", workflow);
    json_t *r = h_api(d, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(r, "id")));
    json_decref(r);
    return id;
}

static long long head_seq(const h_daemon_t *d)
{
    json_t *h = h_api(d, "GET", "/healthz", NULL, 200);
    long long seq = (long long)json_integer_value(json_object_get(h, "outbox_head"));
    json_decref(h);
    return seq;
}

/* The head once it reached at least want (a run's second row, its waiting reason, comes from the
 * scheduler just after the submission's). */
static long long wait_head(const h_daemon_t *d, long long want)
{
    long long end = h_now_ms() + 10000, seq;
    while ((seq = head_seq(d)) < want && h_now_ms() < end)
        h_sleep_ms(20);
    assert_true(seq >= want);
    return seq;
}

static void test_format_and_filters(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    sse_t all, wf, runs, none;
    assert_int_equal(sse_open(&all, &d, "/v1/events", NULL, 0), 0);
    assert_int_equal(all.status, 200);
    assert_non_null(strstr(all.head, "Content-Type: text/event-stream"));
    assert_int_equal(sse_open(&wf, &d, "/v1/events?kinds=workflow", NULL, 0), 0);
    assert_int_equal(sse_open(&runs, &d, "/v1/events?kinds=run", NULL, 0), 0);
    assert_int_equal(sse_open(&none, &d, "/v1/events?kinds=instrument,campaign.result", NULL, 0),
                     0);
    assert_int_equal(runs.status, 200);
    assert_int_equal(none.status, 200);

    store_workflow(&d, "wf-a");
    char *run = submit_run(&d, "wf-a");
    long long head = wait_head(&d, 3);

    json_t *j = expect_event(&all, 1, "workflow");
    assert_string_equal(json_string_value(json_object_get(j, "key")), "wf-a");
    int64_t ts;
    assert_int_equal(lab_time_parse(json_string_value(json_object_get(j, "ts")), &ts), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "data"), "name")),
                        "wf-a");
    json_decref(j);
    for (long long seq = 2; seq <= head; seq++) {
        j = expect_event(&all, seq, "run.state");
        assert_string_equal(json_string_value(json_object_get(j, "key")), run);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "data"), "id")),
                            run);
        json_decref(j);
    }
    /* Each filtered stream skips the other kind: its next event is the next of its own. */
    json_decref(expect_event(&wf, 1, "workflow"));
    json_decref(expect_event(&runs, 2, "run.state"));
    store_workflow(&d, "wf-b");
    json_decref(expect_event(&wf, head + 1, "workflow"));
    for (long long seq = 3; seq <= head; seq++)
        json_decref(expect_event(&runs, seq, "run.state"));
    char *run2 = submit_run(&d, "wf-b");
    json_decref(expect_event(&runs, head + 2, "run.state"));
    ev_t e;
    assert_int_equal(sse_next(&none, &e, 300), 0); /* no instrument, no campaign */
    /* ?after= resumes as Last-Event-ID does. */
    sse_t again;
    char path[64];
    snprintf(path, sizeof path, "/v1/events?after=%lld&kinds=workflow", head);
    assert_int_equal(sse_open(&again, &d, path, NULL, 0), 0);
    json_decref(expect_event(&again, head + 1, "workflow"));
    sse_close(&again);

    /* Bad parameters: 400 with a reason, and nothing else spent. */
    static const struct {
        const char *path, *headers, *needle;
    } bad[] = {
        {"/v1/events?kinds=bogus", NULL, "run.state, instrument.state"},
        {"/v1/events?kinds=", NULL, "kinds"},
        {"/v1/events?kinds=run,,workflow", NULL, "unknown kind"},
        {"/v1/events?kinds=run.stat", NULL, "unknown kind"},
        {"/v1/events?kinds=run,run,run,run,run,run,run,run,run,run,run,run,run,run,run,run,run",
         NULL, "at most 16"},
        {"/v1/events?after=-1", NULL, "after"},
        {"/v1/events?after=12x", NULL, "after"},
        {"/v1/events", "Last-Event-ID: abc", "Last-Event-ID"},
        {"/v1/events", "Last-Event-ID: 99999999999999999999", "Last-Event-ID"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *resp = NULL;
        int st = h_http(d.url, "GET", bad[i].path, bad[i].headers, NULL, &resp);
        if (st != 400 || !resp || !strstr(resp, bad[i].needle))
            fail_msg("%s: %d %s", bad[i].path, st, resp ? resp : "");
        free(resp);
    }
    char longk[700] = "/v1/events?kinds=";
    while (strlen(longk) < 600) /* over the 512 bytes kinds may take */
        strcat(longk, "run,");
    strcat(longk, "run");
    char *resp = NULL;
    assert_int_equal(h_http(d.url, "GET", longk, NULL, NULL, &resp), 400);
    free(resp);
    /* The stream read with ?after= closed its side: the daemon lets its place go. */
    long long end = h_now_ms() + 10000;
    while (h_now_ms() < end && h_metric(&d, "labloop_event_streams") != 4)
        h_sleep_ms(50);
    assert_int_equal(h_metric(&d, "labloop_event_streams"), 4);

    free(run);
    free(run2);
    sse_close(&all);
    sse_close(&wf);
    sse_close(&runs);
    sse_close(&none);
    h_daemon_destroy(&d);
}

/* Reads events from `from` to `to` (both included), one each, in order. */
static void expect_range(sse_t *s, long long from, long long to)
{
    for (long long seq = from; seq <= to; seq++)
        json_decref(expect_event(s, seq, "workflow"));
}

static void open_after(sse_t *s, const h_daemon_t *d, long long after)
{
    char h[64];
    snprintf(h, sizeof h, "Last-Event-ID: %lld\r\n", after);
    assert_int_equal(sse_open(s, d, "/v1/events", h, 0), 0);
    assert_int_equal(s->status, 200);
}

static void wait_delivered(const h_daemon_t *d, long long seq)
{
    long long end = h_now_ms() + 20000, got = -1;
    while (h_now_ms() < end && (got = h_metric(d, "labloop_sink_cursor{sink=\"mqtt\"}")) < seq)
        h_sleep_ms(50);
    assert_true(got >= seq);
}

static void test_resume_and_reset(void **state)
{
    h_mqtt_t mq;
    h_daemon_t d;
    assert_int_equal(h_mqtt_start(&mq), 0);
    /* MQTT makes the outbox pruned once delivered; events_keep keeps the newest 5 rows. */
    assert_int_equal(h_daemon_start(&d, NULL, &mq, "[labloop]\nevents_keep = 5\n"), 0);
    char name[32];
    for (int i = 1; i <= 3; i++) {
        snprintf(name, sizeof name, "r%d", i);
        store_workflow(&d, name);
    }
    sse_t s;
    open_after(&s, &d, 0);
    expect_range(&s, 1, 3);
    sse_close(&s);
    for (int i = 4; i <= 6; i++) {
        snprintf(name, sizeof name, "r%d", i);
        store_workflow(&d, name);
    }
    open_after(&s, &d, 3);
    expect_range(&s, 4, 6);
    store_workflow(&d, "r7");
    expect_range(&s, 7, 7); /* 4..6 once each: the next one is 7 */
    sse_close(&s);

    /* A clean stop prunes what MQTT delivered, all but the newest 5 rows (3..7). */
    wait_delivered(&d, 7);
    assert_int_equal(h_daemon_stop(&d), 0);
    assert_int_equal(h_daemon_restart(&d), 0);
    store_workflow(&d, "r8");
    open_after(&s, &d, 3);
    expect_range(&s, 4, 8);
    sse_close(&s);
    /* Older than what is kept: reset first, with the oldest kept, then on from there. */
    open_after(&s, &d, 1);
    json_t *j = expect_event(&s, 2, "reset");
    assert_int_equal(json_integer_value(json_object_get(j, "oldest")), 3);
    json_decref(j);
    expect_range(&s, 3, 8);
    sse_close(&s);
    /* At the edge (the row after it is the oldest kept): no reset. */
    open_after(&s, &d, 2);
    expect_range(&s, 3, 3);
    sse_close(&s);

    /* Killed: the rows are in the store; a stream open across the kill resumes after it. */
    open_after(&s, &d, 8);
    store_workflow(&d, "r9");
    expect_range(&s, 9, 9);
    h_daemon_kill9(&d);
    ev_t e;
    assert_int_equal(sse_next(&s, &e, 10000), -1);
    sse_close(&s);
    assert_int_equal(h_daemon_restart(&d), 0);
    store_workflow(&d, "r10");
    store_workflow(&d, "r11");
    open_after(&s, &d, 9);
    expect_range(&s, 10, 11);
    sse_close(&s);
    /* An id from another history (past the head): reset to the head. */
    open_after(&s, &d, 1000);
    j = expect_event(&s, 11, "reset");
    assert_int_equal(json_integer_value(json_object_get(j, "oldest")), 12);
    json_decref(j);
    store_workflow(&d, "r12");
    expect_range(&s, 12, 12);
    sse_close(&s);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
}

/* A row committed in SQLite but not yet reported on the loop (the writer's thread commits, the
 * loop hears it a moment later) is not sent before its commit is reported: a stream that took
 * it would stand past the head, and the next look at the head would reset it to before that
 * row, so the client got it twice. The row is committed here behind the daemon's back, which
 * holds that moment open. */
static void test_nothing_past_the_head(void **state)
{
    (void)state;
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    store_workflow(&d, "r1");
    assert_int_equal(wait_head(&d, 1), 1);
    char db[400];
    snprintf(db, sizeof db, "%s/state/labloop.db", d.dir);
    sqlite3 *c = NULL;
    assert_int_equal(sqlite3_open(db, &c), SQLITE_OK);
    sqlite3_busy_timeout(c, 5000);
    assert_int_equal(sqlite3_exec(c,
                                  "INSERT INTO outbox(ts_ms, kind, key, payload) VALUES "
                                  "(1796126400000, 'workflow', 'behind', '{\"name\":\"behind\"}')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(c);
    sse_t s;
    open_after(&s, &d, 0); /* before the ring: read from the outbox */
    expect_range(&s, 1, 1);
    ev_t e;
    assert_int_equal(sse_next(&s, &e, 1500), 0); /* nothing more yet: the head is 1 */
    ev_free(&e);
    store_workflow(&d, "r2"); /* seq 3: reported, and the head passes 2 with it */
    expect_range(&s, 2, 3);
    assert_int_equal(sse_next(&s, &e, 500), 0); /* once each, no reset */
    ev_free(&e);
    sse_close(&s);
    h_daemon_destroy(&d);
}

static void test_limits(void **state)
{
    h_daemon_t d;
    assert_int_equal(
        h_daemon_start(&d, NULL, NULL, "[labloop]\nevents_max_streams = 2\nevents_stall = 2\n"), 0);
    sse_t reader, stuck;
    assert_int_equal(sse_open(&reader, &d, "/v1/events", NULL, 0), 0);
    assert_int_equal(reader.status, 200);
    assert_int_equal(sse_open(&stuck, &d, "/v1/events", NULL, 2048), 0);
    /* The stuck stream is counted once the daemon has it. */
    long long end = h_now_ms() + 10000;
    while (h_now_ms() < end && h_metric(&d, "labloop_event_streams") < 2)
        h_sleep_ms(20);
    assert_int_equal(h_metric(&d, "labloop_event_streams"), 2);
    char *resp = NULL;
    assert_int_equal(h_http(d.url, "GET", "/v1/events", NULL, NULL, &resp), 503);
    assert_non_null(strstr(resp, "events_max_streams"));
    free(resp);
    assert_int_equal(h_metric(&d, "labloop_event_streams_refused_total"), 1);

    /* Enough events to fill every buffer between the daemon and the client that never reads;
     * the reader takes each as it comes and is never held up. */
    char name[32];
    for (int i = 1; i <= 300; i++) {
        snprintf(name, sizeof name, "big-%d", i);
        store_workflow(&d, name);
        json_t *j = expect_event(&reader, i, "workflow");
        assert_string_equal(json_string_value(json_object_get(j, "key")), name);
        json_decref(j);
    }
    /* Bounded: what the daemon holds for the stuck stream is one fill (64 KiB and an event),
     * not the 300 events it did not take. */
    assert_true(h_metric(&d, "labloop_event_streams_buffered_bytes") <= 2 * 72 * 1024);
    end = h_now_ms() + 30000;
    while (h_now_ms() < end && h_metric(&d, "labloop_event_streams_dropped_total") < 1)
        h_sleep_ms(100);
    assert_int_equal(h_metric(&d, "labloop_event_streams_dropped_total"), 1);
    end = h_now_ms() + 10000;
    while (h_now_ms() < end && h_metric(&d, "labloop_event_streams") != 1)
        h_sleep_ms(50);
    assert_int_equal(h_metric(&d, "labloop_event_streams"), 1);
    /* The dropped client finds its stream closed once it reads what was sent. */
    ev_t e;
    int r;
    while ((r = sse_next(&stuck, &e, 10000)) == 1)
        ev_free(&e);
    assert_int_equal(r, -1);
    sse_close(&stuck);
    /* The reader goes on, and the freed place takes a new stream. */
    store_workflow(&d, "after-drop");
    json_decref(expect_event(&reader, 301, "workflow"));
    sse_t next;
    assert_int_equal(sse_open(&next, &d, "/v1/events?after=300", NULL, 0), 0);
    assert_int_equal(next.status, 200);
    json_decref(expect_event(&next, 301, "workflow"));
    sse_close(&next);
    sse_close(&reader);
    h_daemon_destroy(&d);
}

/* The route's roles: any token reads the stream, none gets 401, and a token in the URL is no
 * token (browsers send it in a header, through fetch). */
static void test_auth(void **state)
{
    char dir[256], tokens[300], extra[400];
    assert_int_equal(h_tempdir("labevents-auth", dir, sizeof dir), 0);
    snprintf(tokens, sizeof tokens, "%s/tokens.txt", dir);
    FILE *f = fopen(tokens, "w");
    assert_non_null(f);
    fputs("viewer-token-aaaaaaaa viewer wall\n", f);
    assert_int_equal(fclose(f), 0);
    snprintf(extra, sizeof extra, "[auth]\ntokens = %s\n", tokens);
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, extra), 0);
    sse_t s;
    assert_int_equal(sse_open(&s, &d, "/v1/events", NULL, 0), 0);
    assert_int_equal(s.status, 401);
    sse_close(&s);
    assert_int_equal(sse_open(&s, &d, "/v1/events?token=viewer-token-aaaaaaaa", NULL, 0), 0);
    assert_int_equal(s.status, 401);
    sse_close(&s);
    assert_int_equal(sse_open(&s, &d, "/v1/events?after=0",
                              "Authorization: Bearer viewer-token-aaaaaaaa\r\n", 0),
                     0);
    assert_int_equal(s.status, 200);
    sse_close(&s);
    h_daemon_destroy(&d);
    h_rmtree(dir);
}

/* `labloop watch` as a child with its output in a file. */
static pid_t watch_start(const h_daemon_t *d, const char *args, const char *outpath)
{
    const char *bin = getenv("LABLOOP_CLI");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "exec '%s' watch %s >'%s' 2>'%s.err'", bin && *bin ? bin : "labloop",
             args, outpath, outpath);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("LABLOOP_URL", d->url, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    static char tmp[SSE_BUF];
    size_t n = fread(tmp, 1, sizeof tmp - 1, f);
    tmp[n] = 0;
    fclose(f);
    return strdup(tmp);
}

static int count_lines(const char *path)
{
    char *t = slurp(path);
    int n = 0;
    for (char *p = t; *p; p++)
        n += *p == '\n';
    free(t);
    return n;
}

static void wait_lines(const char *path, int n)
{
    long long end = h_now_ms() + 20000;
    while (h_now_ms() < end && count_lines(path) < n)
        h_sleep_ms(50);
    if (count_lines(path) < n) {
        char *t = slurp(path);
        fail_msg("labloop watch printed fewer than %d lines:\n%s", n, t);
    }
}

static void test_watch(void **state)
{
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    store_workflow(&d, "elisa");
    char path[300], jpath[300];
    snprintf(path, sizeof path, "%s/watch.out", d.dir);
    snprintf(jpath, sizeof jpath, "%s/watch.json", d.dir);
    pid_t w = watch_start(&d, "--kind run.state", path);
    pid_t wj = watch_start(&d, "--json --after 0", jpath);
    /* Both are connected once the daemon counts them. */
    long long end = h_now_ms() + 10000;
    while (h_now_ms() < end && h_metric(&d, "labloop_event_streams") < 2)
        h_sleep_ms(20);
    char *run = submit_run(&d, "elisa");
    long long head = wait_head(&d, 3);
    wait_lines(path, (int)head - 1);
    char *t = slurp(path);
    /* "SEQ run.state RUN {...}": seq 2 onwards (1 is the workflow, filtered out). */
    char *line = t;
    for (long long seq = 2; seq <= head; seq++) {
        char want[128];
        snprintf(want, sizeof want, "%lld run.state %s {", seq, run);
        if (strncmp(line, want, strlen(want)) != 0)
            fail_msg("expected a line starting '%s', got:\n%s", want, t);
        char *nl = strchr(line, '\n');
        *nl = 0;
        json_t *j = json_loads(line + strlen(want) - 1, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "id")), run);
        json_decref(j);
        line = nl + 1;
    }
    free(t);
    wait_lines(jpath, (int)head);
    t = slurp(jpath);
    json_t *first = json_loadb(t, strcspn(t, "\n"), 0, NULL);
    assert_non_null(first);
    assert_int_equal(json_integer_value(json_object_get(first, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(first, "kind")), "workflow");
    assert_string_equal(json_string_value(json_object_get(first, "key")), "elisa");
    json_decref(first);
    free(t);

    /* The daemon goes away and comes back: watch reconnects after the last event it printed,
     * so the next run's events follow without a gap or a repeat. */
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    char *run2 = submit_run(&d, "elisa");
    long long head2 = wait_head(&d, head + 2);
    wait_lines(path, (int)head2 - 1);
    t = slurp(path);
    line = t;
    for (long long seq = 2; seq <= head2; seq++) {
        long long got = atoll(line);
        if (got != seq)
            fail_msg("line %lld is seq %lld:\n%s", seq, got, t);
        line = strchr(line, '\n') + 1;
    }
    assert_non_null(strstr(t, run2));
    free(t);

    /* Ctrl-C ends it cleanly. */
    int st;
    kill(w, SIGINT);
    kill(wj, SIGINT);
    assert_int_equal(waitpid(w, &st, 0), w);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(waitpid(wj, &st, 0), wj);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* A kind the daemon does not know: its reason, exit 1, no retrying. */
    char cmd[700], out[4096];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' watch --kind bogus 2>&1", d.url,
             getenv("LABLOOP_CLI") ? getenv("LABLOOP_CLI") : "labloop");
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "unknown kind bogus"));
    free(run);
    free(run2);
    h_daemon_destroy(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_filters),
        cmocka_unit_test(test_resume_and_reset),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_nothing_past_the_head),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
