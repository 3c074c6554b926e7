/* What the benchmarks share: a labloopd started through the harness but logging at warn (the
 * harness starts it at debug, which would measure the log), a pool of keep-alive HTTP clients
 * submitting runs, the daemon's memory from /proc, and one JSON line per figure. Header-only: each
 * bench is one program. */
#ifndef LAB_TESTS_BENCH_UTIL_H
#define LAB_TESTS_BENCH_UTIL_H

#include "tests/harness/harness.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LABLOOPD_PATH
#define LABLOOPD_PATH "labloopd"
#endif

/* Monotonic milliseconds, with a fraction (latencies below a millisecond). */
static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* qsort order for doubles (medians and percentiles). */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline int bench_fail(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
    exit(1);
}

/* Starts labloopd with the harness, then again with log_level = warn, and stores the example
 * workflow as elisa-demo, the workflow its runs name. */
/* labloopd with the harness's config and extra, logging warnings only (debug lines cost). */
static inline void bench_daemon_start_quiet(h_daemon_t *d, const h_pg_t *pg, const h_mqtt_t *mq,
                                            const char *extra)
{
    setenv("LABLOOPD", LABLOOPD_PATH, 0);
    if (h_daemon_start(d, pg, mq, extra) || h_daemon_stop(d) != 0)
        bench_fail("labloopd did not start");
    FILE *f = fopen(d->conf, "r");
    char text[8192];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    char *at = strstr(text, "log_level = debug");
    if (!at)
        bench_fail("unexpected harness config");
    memcpy(at, "log_level = warn ", 17);
    f = fopen(d->conf, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        bench_fail("cannot rewrite the config");
    if (h_daemon_restart(d))
        bench_fail("labloopd did not restart");
}

/* The same, with the example workflow stored as elisa-demo: the runs submitted follow a stored
 * workflow, as a lab's do (one not stored is refused). Without [auth] in extra. */
static inline void bench_daemon_start(h_daemon_t *d, const h_pg_t *pg, const h_mqtt_t *mq,
                                      const char *extra)
{
    bench_daemon_start_quiet(d, pg, mq, extra);
    if (h_workflow_example(d->url, "elisa-demo"))
        bench_fail("the example workflow was not stored");
}

/* ---- submitting runs from many keep-alive clients ---- */

typedef struct bench_pool {
    const char *url;
    const char *workflow;
    int from;           /* plate numbers from here */
    int count;          /* submissions in all */
    atomic_int next;    /* next submission to make */
    atomic_int acked;   /* answered 201 */
    atomic_int refused; /* any other answer */
    char first_error[256];
    pthread_mutex_t lock;
} bench_pool_t;

static size_t bench_discard(char *data, size_t size, size_t nmemb, void *user)
{
    (void)data;
    (void)user;
    return size * nmemb;
}

static void *bench_client(void *arg)
{
    bench_pool_t *p = arg;
    CURL *c = curl_easy_init();
    char url[256], body[160];
    snprintf(url, sizeof url, "%s/v1/runs", p->url);
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, bench_discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->count)
            break;
        snprintf(body, sizeof body,
                 "{\"workflow\":\"%s\",\"plate\":\"P%07d\",\"priority\":\"normal\"}", p->workflow,
                 p->from + i);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        long status = 0;
        CURLcode rc = curl_easy_perform(c);
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status == 201) {
            atomic_fetch_add(&p->acked, 1);
        } else {
            atomic_fetch_add(&p->refused, 1);
            pthread_mutex_lock(&p->lock);
            if (!p->first_error[0])
                snprintf(p->first_error, sizeof p->first_error, "status %ld: %s", status,
                         rc == CURLE_OK ? "" : curl_easy_strerror(rc));
            pthread_mutex_unlock(&p->lock);
        }
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return NULL;
}

/* Submits count runs of workflow with `clients` concurrent connections; returns the seconds it
 * took. */
static inline double bench_submit_wf(const char *url, const char *workflow, int clients, int from,
                                     int count, int *acked)
{
    bench_pool_t p = {.url = url, .workflow = workflow, .from = from, .count = count};
    pthread_mutex_init(&p.lock, NULL);
    pthread_t *t = calloc((size_t)clients, sizeof *t);
    long long t0 = h_now_ms();
    for (int i = 0; i < clients; i++)
        pthread_create(&t[i], NULL, bench_client, &p);
    for (int i = 0; i < clients; i++)
        pthread_join(t[i], NULL);
    long long t1 = h_now_ms();
    free(t);
    pthread_mutex_destroy(&p.lock);
    *acked = atomic_load(&p.acked);
    if (atomic_load(&p.refused))
        fprintf(stderr, "bench: %d submissions not acknowledged (first: %s)\n",
                atomic_load(&p.refused), p.first_error);
    return (double)(t1 - t0) / 1000.0;
}

/* The same for a workflow the daemon does not hold (the run waits for it). */
static inline double bench_submit_runs(const char *url, int clients, int from, int count,
                                       int *acked)
{
    return bench_submit_wf(url, "elisa-demo", clients, from, count, acked);
}

/* A field of /proc/PID/status in kB (VmRSS, VmHWM), or -1. */
static inline long bench_proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t flen = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, flen) == 0 && line[flen] == ':')
            kb = strtol(line + flen + 1, NULL, 10);
    fclose(f);
    return kb;
}

/* Whether the npm peers may be measured here: false with why when LAB_BENCH_PEERS=0 or node and
 * npm are not installed (the bench then says it skipped them and why). */
static inline bool bench_peers_here(char *why, size_t wcap)
{
    const char *want = getenv("LAB_BENCH_PEERS");
    if (want && strcmp(want, "0") == 0) {
        snprintf(why, wcap, "LAB_BENCH_PEERS=0");
        return false;
    }
    if (h_run("command -v node >/dev/null && command -v npm >/dev/null", NULL, 0) != 0) {
        snprintf(why, wcap, "node or npm is not installed");
        return false;
    }
    return true;
}

#endif
