/* libFuzzer target: the HTTP request path (MHD's parsing, routing, tokens, validation, handlers,
 * problem answers). The API runs once, with [auth] and a local store in a temporary directory, no
 * PostgreSQL, MQTT, scheduler, instruments or closed loop. Each input is the raw bytes a client
 * sends on one connection (a socketpair handed to the server), then its half-close; the loop runs
 * until the server closes. Every answer must be HTTP, and every JSON or problem+json body must
 * parse. An abort, a sanitizer report or a malformed answer is a finding. */
#include "daemon/api/api.h"
#include "core/cfg.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/store.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* The token the seed corpus uses (tests/fuzz/corpus/http/). */
#define TOKEN "fuzz-token-technician-0001"

static struct {
    uv_loop_t loop;
    lab_clock_t clock;
    lab_store_t *store;
    lab_config_t cfg;
    lab_api_t *api;
    char dir[128];
} g;

static void fail(const char *what, const char *text, size_t len)
{
    fprintf(stderr, "fuzz_http: %s\n%.*s\n", what, (int)(len > 2000 ? 2000 : len), text);
    abort();
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* libFuzzer ends with exit(): the state directory goes with it. */
static void cleanup(void)
{
    nftw(g.dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void start(void)
{
    lab_log_set_level(LAB_LOG_ERROR + 1); /* every answer is checked here, not logged */
    /* tmpfs when there is one: a run submitted whole is committed, and fsync is the cost. */
    snprintf(g.dir, sizeof g.dir, "%s/labloop-fuzz-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(g.dir))
        fail("mkdtemp", g.dir, strlen(g.dir));
    atexit(cleanup);
    char tokens[200];
    snprintf(tokens, sizeof tokens, "%s/tokens", g.dir);
    FILE *f = fopen(tokens, "w");
    if (!f)
        fail("tokens file", tokens, strlen(tokens));
    fputs(TOKEN " technician fuzz\nfuzz-token-viewer-000000001 viewer\n", f);
    fclose(f);
    uv_loop_init(&g.loop);
    lab_clock_init(&g.clock, &g.loop, 1.0);
    lab_config_t *c = &g.cfg;
    c->site = lab_strdup("fuzz");
    c->cell = lab_strdup("c1");
    c->state_dir = lab_strdup(g.dir);
    c->http = lab_strdup("127.0.0.1:0"); /* listens, but only socketpairs ever come */
    c->time_scale = 1;
    c->http_max_body = 64 * 1024;
    c->http_max_conns = 16;
    c->http_idle_timeout_s = 15;
    c->auth_enabled = true;
    c->auth_tokens = lab_strdup(tokens);
    if (lab_store_open(&g.store, &g.loop, g.dir))
        fail("lab_store_open", g.dir, strlen(g.dir));
    lab_api_deps_t deps = {.loop = &g.loop, .cfg = c, .clock = &g.clock, .store = g.store};
    if (lab_api_start(&g.api, &deps))
        fail("lab_api_start", g.dir, strlen(g.dir));
}

/* One answer at text (len bytes): a status line, a head, and the body its Content-Length says;
 * JSON bodies must parse. After a HEAD request only the first answer's head is checked. Returns its
 * length, or 0 when the bytes end first (the server may close mid-answer only if it never started
 * one). */
static size_t check_answer(const char *text, size_t len, bool head_request)
{
    if (len < 12 || memcmp(text, "HTTP/1.", 7) != 0 || text[8] != ' ' || text[9] < '1' ||
        text[9] > '5')
        fail("not an HTTP answer", text, len);
    const char *end = memmem(text, len, "\r\n\r\n", 4);
    if (!end)
        fail("an answer without the end of its head", text, len);
    size_t hl = (size_t)(end + 4 - text);
    char *head = strndup(text, hl);
    const char *cl = strcasestr(head, "\r\nContent-Length:");
    const char *ct = strcasestr(head, "\r\nContent-Type:");
    size_t bl = cl ? strtoul(cl + 17, NULL, 10) : 0;
    bool problem = ct && strncasecmp(ct + 15, " application/problem+json", 25) == 0;
    bool json = problem || (ct && strncasecmp(ct + 15, " application/json", 17) == 0);
    bool head_only = strncmp(text + 9, "304", 3) == 0 || strncmp(text + 9, "1", 1) == 0;
    bool last = strcasestr(head, "\r\nConnection: close") != NULL;
    free(head);
    /* MHD's own refusals (HTML, then the connection closes) are MHD's; 0.9.75 writes the head
     * of some twice. Only the answers the API builds are checked past their status line. */
    if ((!json && (last || !cl) && !head_only) || head_request)
        return len;
    if (hl + bl > len)
        fail("an answer cut short", text, len);
    if (json) {
        json_error_t err;
        json_t *doc = json_loadb(text + hl, bl, 0, &err);
        if (!doc)
            fail("a JSON body that does not parse", text, hl + bl);
        if (problem && (!json_is_integer(json_object_get(doc, "status")) ||
                        !json_is_string(json_object_get(doc, "detail"))))
            fail("a problem without status or detail", text, hl + bl);
        json_decref(doc);
    }
    return hl + bl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g.api)
        start();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        fail("socketpair", "", 0);
    if (lab_api_add_connection(g.api, sv[1])) {
        close(sv[0]);
        return 0;
    }
    size_t cap = 1 << 16, got = 0, sent = 0;
    char *in = malloc(cap);
    if (size == 0)
        shutdown(sv[0], SHUT_WR);
    /* Written as the server reads (a socketpair holds only so much), then half-closed. The
     * exchange is over when the server closed, or when nothing is left to happen: everything
     * sent, no store op in flight, no loop event pending and nothing to read (a socketpair
     * delivers at once, and MHD works only inside uv_run). Waiting for the close alone would
     * wait for the idle timeout: MHD misses a half-close that came with the last bytes. */
    for (;;) {
        struct pollfd p[2] = {{.fd = sv[0], .events = POLLIN | (sent < size ? POLLOUT : 0)},
                              {.fd = uv_backend_fd(&g.loop), .events = POLLIN}};
        int timeout = uv_backend_timeout(&g.loop);
        bool maybe_over = sent == size && timeout != 0 && lab_api_in_flight(g.api) == 0;
        if (maybe_over)
            timeout = 0;
        else if (timeout < 0 || timeout > 100)
            timeout = 100;
        if (poll(p, 2, timeout) == 0 && maybe_over)
            break;
        if (sent < size && (p[0].revents & POLLOUT)) {
            ssize_t n = send(sv[0], data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                sent = size; /* the server is gone: nothing more to write */
            if (sent == size)
                shutdown(sv[0], SHUT_WR);
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            if (got == cap)
                in = realloc(in, cap *= 2);
            ssize_t n = recv(sv[0], in + got, cap - got, MSG_DONTWAIT);
            if (n > 0)
                got += (size_t)n;
            else if (n == 0 || errno != EAGAIN)
                break;
        }
        uv_run(&g.loop, UV_RUN_NOWAIT);
    }
    close(sv[0]);
    uv_run(&g.loop, UV_RUN_NOWAIT); /* the server sees the close */
    /* An answer to HEAD has a Content-Length and no body: only the first answer is read then. */
    bool head = memmem(data, size, "HEAD", 4) != NULL;
    for (size_t off = 0; off < got;)
        off += check_answer(in + off, got - off, head);
    free(in);
    return 0;
}
