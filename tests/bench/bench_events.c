/* Benchmark: what connected event streams cost the loop. Two phases in one run, each on a fresh
 * labloopd (embedded mode, the example workflow stored, no instruments: every run waits): one
 * with no extra GET /v1/events streams and one with STREAMS of them, each read to the end by
 * a client thread as a dashboard would. Per phase: acknowledged submissions per second from 8
 * keep-alive clients, and before them the re-plan latency seen by a client: from sending POST
 * /v1/runs to the re-plan it causes being counted in /metrics (labloop_replans_total, polled),
 * REPEATS times, p50 and p95 (measured first: once the queue is longer than the planner's window
 * a new run joins the queue without a re-plan). Then
 * the ratios (streams / none), which the issue wants within 10%. One JSON line per figure on
 * stdout.
 *
 *   bench_events [COUNT [REPEATS [STREAMS]]]     defaults 5000, 50 and 50 */
#include "tests/bench/bench_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CLIENTS = 8, STREAMS_MAX = 256, ROUNDS = 3, ROUNDS_MAX = 15 };

/* A stream over HTTP/1.0: the body is the event stream itself. */
static int stream_open(const h_daemon_t *d, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        bench_fail("cannot connect an event stream");
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        bench_fail("cannot send an event stream's request");
    return fd;
}

/* The extra streams, drained by one thread; events counted per stream. */
typedef struct drain {
    int fds[STREAMS_MAX];
    long long events[STREAMS_MAX];
    char tail[STREAMS_MAX][4];
    int n;
    atomic_int stop;
} drain_t;

static void *drain_main(void *arg)
{
    drain_t *dr = arg;
    struct pollfd p[STREAMS_MAX];
    static char buf[65536];
    while (!atomic_load(&dr->stop)) {
        for (int i = 0; i < dr->n; i++)
            p[i] = (struct pollfd){dr->fds[i], POLLIN, 0};
        if (poll(p, (nfds_t)dr->n, 100) <= 0)
            continue;
        for (int i = 0; i < dr->n; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP)))
                continue;
            /* An event starts with "\nid: " (data is one line): the last 4 bytes of the previous
             * read go first, so a start split between two reads is counted once. */
            memcpy(buf, dr->tail[i], 4);
            ssize_t got = recv(dr->fds[i], buf + 4, sizeof buf - 5, MSG_DONTWAIT);
            if (got <= 0)
                continue;
            size_t len = (size_t)got + 4;
            for (char *q = buf; (q = memmem(q, len - (size_t)(q - buf), "\nid: ", 5)); q += 5)
                dr->events[i]++;
            memcpy(dr->tail[i], buf + got, 4);
        }
    }
    return NULL;
}

static size_t keep_body(char *data, size_t size, size_t nmemb, void *user)
{
    char *out = user;
    size_t n = size * nmemb, have = strlen(out);
    if (have + n < 4096) {
        memcpy(out + have, data, n);
        out[have + n] = 0;
    }
    return n;
}

typedef struct phase {
    double per_s, p50, p95;
    int acked;
    long long events_min, head;
} phase_t;

static long long head_seq(const h_daemon_t *d)
{
    char *resp = NULL;
    long long seq = -1;
    if (h_http(d->url, "GET", "/healthz", NULL, NULL, &resp) == 200 && resp) {
        char *at = strstr(resp, "\"outbox_head\":");
        seq = at ? atoll(at + 14) : -1;
    }
    free(resp);
    return seq;
}

static void phase_run(int streams, int count, int repeats, phase_t *f)
{
    h_daemon_t d;
    bench_daemon_start(&d, NULL, NULL, "[labloop]\nevents_max_streams = 300\n");
    drain_t *dr = calloc(1, sizeof *dr);
    dr->n = streams;
    for (int i = 0; i < streams; i++)
        dr->fds[i] = stream_open(&d, "/v1/events?after=0");
    pthread_t t;
    pthread_create(&t, NULL, drain_main, dr);
    /* Every stream is open once the daemon counts them all. */
    long long end = h_now_ms() + 20000;
    while (h_metric(&d, "labloop_event_streams") < streams && h_now_ms() < end)
        h_sleep_ms(20);
    if (h_metric(&d, "labloop_event_streams") < streams)
        bench_fail("the event streams did not open");

    CURL *c = curl_easy_init();
    char url[128], body[160], resp[4096];
    snprintf(url, sizeof url, "%s/v1/runs", d.url);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    double *ms = calloc((size_t)repeats, sizeof *ms);
    for (int i = 0; i < repeats; i++) {
        snprintf(body, sizeof body, "{\"workflow\":\"elisa-demo\",\"plate\":\"R%07d\"}", i);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        resp[0] = 0;
        /* Quiet first: the re-plan of the previous submission is done and counted. */
        long long before = -1, seen;
        while ((seen = h_metric(&d, "labloop_replans_total")) != before) {
            before = seen;
            h_sleep_ms(150);
        }
        double t0 = bench_now_ms();
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status != 201)
            bench_fail("a re-plan submission was not acknowledged");
        /* The re-plan it causes has completed once the daemon counts one more. */
        while (h_metric(&d, "labloop_replans_total") <= before && bench_now_ms() - t0 < 30000)
            ;
        if (h_metric(&d, "labloop_replans_total") <= before)
            bench_fail("no re-plan followed a submission");
        ms[i] = bench_now_ms() - t0;
    }
    qsort(ms, (size_t)repeats, sizeof *ms, bench_cmp_double);
    f->p50 = ms[repeats / 2];
    f->p95 = ms[(int)((repeats - 1) * 0.95 + 0.5)];
    free(ms);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);

    /* Then the submissions, from 8 clients at once. */
    double secs = bench_submit_runs(d.url, CLIENTS, repeats + 1, count, &f->acked);
    f->per_s = f->acked / secs;

    /* Every extra stream got every row (each row is one event). */
    f->head = head_seq(&d);
    end = h_now_ms() + 30000;
    for (;;) {
        f->events_min = streams ? dr->events[0] : 0;
        for (int i = 1; i < streams; i++)
            if (dr->events[i] < f->events_min)
                f->events_min = dr->events[i];
        if (!streams || f->events_min >= f->head || h_now_ms() > end)
            break;
        h_sleep_ms(50);
    }
    atomic_store(&dr->stop, 1);
    pthread_join(t, NULL);
    for (int i = 0; i < streams; i++)
        close(dr->fds[i]);
    free(dr);
    h_daemon_destroy(&d);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 5000;
    int repeats = argc > 2 ? atoi(argv[2]) : 50;
    int streams = argc > 3 ? atoi(argv[3]) : 50;
    int rounds = argc > 4 ? atoi(argv[4]) : ROUNDS;
    if (count < 1 || repeats < 1 || streams < 1 || streams > STREAMS_MAX || rounds < 1 ||
        rounds > ROUNDS_MAX)
        bench_fail("usage: bench_events [COUNT [REPEATS [STREAMS [ROUNDS]]]]");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int n[2] = {0, streams};
    double per_s[2][ROUNDS_MAX], p95[2][ROUNDS_MAX], p50[2][ROUNDS_MAX];
    int rc = 0;
    /* The phases alternate, so that a change of the machine's load (it may be shared) falls on
     * both alike; each figure is the median over the rounds. */
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            phase_t f;
            phase_run(n[k], count, repeats, &f);
            rc |= f.acked != count || (n[k] && f.events_min < f.head);
            per_s[k][r] = f.per_s;
            p95[k][r] = f.p95;
            p50[k][r] = f.p50;
            printf("{\"bench\":\"events_round\",\"round\":%d,\"streams\":%d,\"submitted\":%d,"
                   "\"acked\":%d,\"acked_per_s\":%.0f,\"replans\":%d,\"replan_p50_ms\":%.2f,"
                   "\"replan_p95_ms\":%.2f,\"outbox_head\":%lld,\"events_per_stream_min\":%lld}\n",
                   r + 1, n[k], count, f.acked, f.per_s, repeats, f.p50, f.p95, f.head,
                   f.events_min);
            fflush(stdout);
        }
    }
    double m_rate[2], m_p95[2];
    for (int k = 0; k < 2; k++) {
        m_rate[k] = median(per_s[k], rounds);
        m_p95[k] = median(p95[k], rounds);
        printf("{\"bench\":\"events\",\"streams\":%d,\"rounds\":%d,\"submitted\":%d,"
               "\"acked_per_s\":%.0f,\"replan_p50_ms\":%.2f,\"replan_p95_ms\":%.2f}\n",
               n[k], rounds, count, m_rate[k], median(p50[k], rounds), m_p95[k]);
    }
    printf("{\"bench\":\"events_ratio\",\"streams\":%d,\"submit_ratio\":%.3f,"
           "\"replan_p95_ratio\":%.3f,\"target_within_pct\":10}\n",
           streams, m_rate[1] / m_rate[0], m_p95[1] / m_p95[0]);
    curl_global_cleanup();
    return rc;
}
