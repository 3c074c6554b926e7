/* Harness: labloopd as a child process (config written into its own temporary directory, output
 * into DIR/labloopd.log, started with PR_SET_PDEATHSIG so a crashed test takes it down, killed at
 * exit when a test did not stop it), and h_http, one libcurl request. */
#include "tests/harness/harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#ifndef LAB_BUILD_DIR
#define LAB_BUILD_DIR "."
#endif

enum { START_DEADLINE_MS = 20000, STOP_DEADLINE_MS = 60000, MAX_DAEMONS = 32 };

/* The atexit registry holds copies, not pointers: a test's h_daemon_t often lives on a stack
 * frame that a failed cmocka assertion has already left. */
typedef struct reg_entry {
    char dir[256];
    pid_t pid;
} reg_entry_t;

static reg_entry_t reg[MAX_DAEMONS];
static int reg_n;
static int cell_counter;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void cleanup_at_exit(void)
{
    for (int i = 0; i < reg_n; i++) {
        if (reg[i].pid > 0) {
            kill(reg[i].pid, SIGKILL);
            waitpid(reg[i].pid, NULL, 0);
            reg[i].pid = 0;
        }
        if (reg[i].dir[0])
            fprintf(stderr, "harness: left %s (labloopd.log) for inspection\n", reg[i].dir);
    }
    reg_n = 0;
}

static reg_entry_t *reg_find(const char *dir, int add)
{
    for (int i = 0; i < reg_n; i++)
        if (strcmp(reg[i].dir, dir) == 0)
            return &reg[i];
    if (!add)
        return NULL;
    if (reg_n == 0)
        atexit(cleanup_at_exit);
    for (int i = 0; i < reg_n; i++)
        if (!reg[i].dir[0]) {
            snprintf(reg[i].dir, sizeof reg[i].dir, "%s", dir);
            return &reg[i];
        }
    if (reg_n == MAX_DAEMONS)
        return NULL;
    snprintf(reg[reg_n].dir, sizeof reg[reg_n].dir, "%s", dir);
    reg[reg_n].pid = 0;
    return &reg[reg_n++];
}

static void reg_set_pid(const h_daemon_t *d)
{
    reg_entry_t *e = reg_find(d->dir, 1);
    if (e)
        e->pid = d->pid;
}

static const char *labloopd_path(void)
{
    const char *p = getenv("LABLOOPD");
    return p && *p ? p : LAB_BUILD_DIR "/labloopd";
}

/* The last `lines` lines of the daemon's log, to stderr: what a failed start or test needs. */
static void print_log_tail(const h_daemon_t *d, int lines)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' 1>&2", lines, d->log);
    fprintf(stderr, "harness: ---- last lines of %s ----\n", d->log);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: (no log)\n");
    fprintf(stderr, "harness: ----\n");
}

static int write_config(h_daemon_t *d, const h_pg_t *pg, const h_mqtt_t *mq, const char *extra)
{
    FILE *f = fopen(d->conf, "w");
    if (!f) {
        fprintf(stderr, "harness: cannot write %s: %s\n", d->conf, strerror(errno));
        return -1;
    }
    fprintf(f,
            "[labloop]\nsite = lab\ncell = cell%d\nstate_dir = %s/state\nhttp = 127.0.0.1:%d\n"
            "log_level = debug\n",
            ++cell_counter, d->dir, d->port);
    if (pg)
        fprintf(f, "\n[postgres]\nconninfo = %s\n", pg->conninfo);
    if (mq)
        fprintf(f, "\n[mqtt]\nuri = %s\n", mq->uri);
    if (extra && *extra)
        fprintf(f, "\n%s\n", extra);
    if (fclose(f) != 0) {
        fprintf(stderr, "harness: cannot write %s: %s\n", d->conf, strerror(errno));
        return -1;
    }
    return 0;
}

static int spawn(h_daemon_t *d)
{
    const char *bin = labloopd_path();
    int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "harness: cannot open %s: %s\n", d->log, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls here: the test process may have threads. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execl(bin, bin, "-c", d->conf, (char *)NULL);
        static const char msg[] = "harness: exec labloopd failed\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
            _exit(127);
        _exit(127);
    }
    close(fd);
    d->pid = pid;
    reg_set_pid(d);
    return 0;
}

/* Waits for /healthz to answer 200, or for the process to end. */
static int wait_ready(h_daemon_t *d)
{
    long long deadline = h_now_ms() + START_DEADLINE_MS;
    for (;;) {
        int st;
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid) {
            fprintf(stderr, "harness: labloopd (%s) exited during start (%s %d)\n", d->conf,
                    WIFEXITED(st) ? "status" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            d->pid = 0;
            reg_set_pid(d);
            print_log_tail(d, 40);
            return -1;
        }
        char *body = NULL;
        int status = h_http(d->url, "GET", "/healthz", NULL, NULL, &body);
        free(body);
        if (status == 200)
            return 0;
        if (h_now_ms() > deadline) {
            fprintf(stderr, "harness: labloopd (%s) not ready after %d ms (last /healthz: %d)\n",
                    d->conf, START_DEADLINE_MS, status);
            print_log_tail(d, 40);
            h_daemon_kill9(d);
            return -1;
        }
        h_sleep_ms(50);
    }
}

int h_daemon_start(h_daemon_t *d, const h_pg_t *pg, const h_mqtt_t *mq, const char *extra)
{
    memset(d, 0, sizeof *d);
    if (h_tempdir("labloopd", d->dir, sizeof d->dir))
        return -1;
    snprintf(d->conf, sizeof d->conf, "%s/labloop.ini", d->dir);
    snprintf(d->log, sizeof d->log, "%s/labloopd.log", d->dir);
    d->port = h_free_port();
    if (d->port <= 0) {
        fprintf(stderr, "harness: no free port\n");
        return -1;
    }
    snprintf(d->url, sizeof d->url, "http://127.0.0.1:%d", d->port);
    if (!reg_find(d->dir, 1)) {
        fprintf(stderr, "harness: more than %d daemons in one test\n", MAX_DAEMONS);
        return -1;
    }
    if (write_config(d, pg, mq, extra))
        return -1;
    if (spawn(d))
        return -1;
    return wait_ready(d);
}

int h_daemon_restart(h_daemon_t *d)
{
    if (d->pid > 0) {
        fprintf(stderr, "harness: restart of a running labloopd (pid %d)\n", (int)d->pid);
        return -1;
    }
    if (spawn(d))
        return -1;
    return wait_ready(d);
}

int h_daemon_stop(h_daemon_t *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    long long deadline = h_now_ms() + STOP_DEADLINE_MS;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid)
            break;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "harness: waitpid %d: %s\n", (int)d->pid, strerror(errno));
            d->pid = 0;
            reg_set_pid(d);
            return -1;
        }
        if (h_now_ms() > deadline) {
            fprintf(stderr, "harness: labloopd did not exit %d ms after SIGTERM\n",
                    STOP_DEADLINE_MS);
            print_log_tail(d, 40);
            h_daemon_kill9(d);
            return -1;
        }
        h_sleep_ms(20);
    }
    d->pid = 0;
    reg_set_pid(d);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    fprintf(stderr, "harness: labloopd ended by signal %d after SIGTERM\n", WTERMSIG(st));
    print_log_tail(d, 40);
    return 128 + WTERMSIG(st);
}

void h_daemon_kill9(h_daemon_t *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    d->pid = 0;
    reg_set_pid(d);
}

int h_daemon_exited(h_daemon_t *d, int *status)
{
    if (d->pid <= 0)
        return -1;
    int st = 0;
    pid_t r;
    while ((r = waitpid(d->pid, &st, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return 0;
    d->pid = 0;
    reg_set_pid(d);
    if (status)
        *status = st;
    return r < 0 ? -1 : 1;
}

void h_daemon_destroy(h_daemon_t *d)
{
    if (d->pid > 0 && h_daemon_stop(d) != 0)
        h_daemon_kill9(d);
    reg_entry_t *e = d->dir[0] ? reg_find(d->dir, 0) : NULL;
    if (e) {
        e->pid = 0;
        e->dir[0] = '\0';
    }
    if (d->dir[0] && !getenv("H_KEEP"))
        h_rmtree(d->dir);
    d->dir[0] = '\0';
}

/* ---- HTTP ---- */

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    buf_t *b = user;
    size_t add = size * nmemb;
    char *p = realloc(b->p, b->n + add + 1);
    if (!p)
        return 0;
    memcpy(p + b->n, data, add);
    b->n += add;
    p[b->n] = '\0';
    b->p = p;
    return add;
}

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int h_http(const char *url, const char *method, const char *path, const char *headers,
           const char *body, char **resp)
{
    pthread_once(&curl_once, curl_init_once);
    if (resp)
        *resp = NULL;
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    char full[2048];
    snprintf(full, sizeof full, "%s%s", url, path);
    struct curl_slist *hl = NULL;
    int has_ctype = 0;
    if (headers) {
        char *copy = strdup(headers);
        char *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (!*line)
                continue;
            if (strncasecmp(line, "Content-Type:", 13) == 0)
                has_ctype = 1;
            hl = curl_slist_append(hl, line);
        }
        free(copy);
    }
    if (body && !has_ctype)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    buf_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    if (hl)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    long status = 0;
    curl_easy_perform(c);
    /* A server may answer (413) and close before the whole body was sent: the answer counts. */
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (resp)
        *resp = b.p;
    else
        free(b.p);
    return status > 0 ? (int)status : -1;
}

json_t *h_api(const h_daemon_t *d, const char *method, const char *path, const char *body, int want)
{
    char *resp = NULL;
    int st =
        h_http(d->url, method, path, body ? "Content-Type: application/json" : NULL, body, &resp);
    if (st != want)
        fail_msg("%s %s %s: %d (wanted %d) %s", method, path, body ? body : "", st, want,
                 resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "null", JSON_DECODE_ANY, NULL);
    free(resp);
    return doc;
}

json_t *h_run_get(const h_daemon_t *d, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    return h_api(d, "GET", path, NULL, 200);
}

json_t *h_run_wait(const h_daemon_t *d, const char *id, const char *state, int ms)
{
    json_t *doc = NULL;
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = h_run_get(d, id);
        const char *now = json_string_value(json_object_get(doc, "state"));
        if (now && strcmp(now, state) == 0)
            return doc;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    fail_msg("run %s not %s after %d ms: %s", id, state, ms, text ? text : "null");
    free(text);
    json_decref(doc);
    return NULL;
}

int h_workflow_example(const char *url, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/deploy/examples/elisa.workflow.json", LAB_SOURCE_DIR);
    json_error_t je;
    json_t *wf = json_load_file(path, 0, &je);
    if (!wf) {
        fprintf(stderr, "harness: %s: %s\n", path, je.text);
        return -1;
    }
    if (name)
        json_object_set_new(wf, "name", json_string(name));
    char *body = json_dumps(wf, JSON_COMPACT);
    json_decref(wf);
    char *resp = NULL;
    int st = h_http(url, "POST", "/v1/workflows", "Content-Type: application/json", body, &resp);
    if (st != 201 && st != 200)
        fprintf(stderr, "harness: POST /v1/workflows %s: %d %s\n", path, st, resp ? resp : "");
    free(body);
    free(resp);
    return st == 201 || st == 200 ? 0 : -1;
}

long long h_metric(const h_daemon_t *d, const char *series)
{
    char *resp = NULL, key[256];
    if (h_http(d->url, "GET", "/metrics", NULL, NULL, &resp) != 200) {
        free(resp);
        return -1;
    }
    snprintf(key, sizeof key, "\n%s ", series);
    const char *p = resp ? strstr(resp, key) : NULL;
    long long v = p ? atoll(p + strlen(key)) : -1;
    free(resp);
    return v;
}

void h_daemon_cell_name(const h_daemon_t *d, char *out, size_t cap)
{
    FILE *f = fopen(d->conf, "r");
    char line[256];
    out[0] = '\0';
    while (f && fgets(line, sizeof line, f)) {
        char cell[64];
        if (sscanf(line, "cell = %63s", cell) == 1)
            snprintf(out, cap, "%s", cell);
    }
    if (f)
        fclose(f);
}
