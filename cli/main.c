/* labloop: the command line for people and scripts, over the daemon's HTTP API.
 * Human tables by default, --json for scripts; on failure a one-line reason and a non-zero exit
 * (1: the daemon said no, 2: usage, 3: the daemon could not be reached). */
#include "core/chain.h"
#include "core/id.h"
#include "core/mem.h"
#include "planner/planner.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <libserialport.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LAB_VERSION
#define LAB_VERSION "0"
#endif

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    buf_t *b = arg;
    size_t n = size * nmemb;
    b->p = lab_realloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static long req_timeout_s = 30; /* 0: wait as long as the daemon takes (instrument actions) */

/* One request, with one extra header line when given; returns the HTTP status (0 when the daemon
 * could not be reached, *how then says why). */
static long request_with(const char *method, const char *path, const char *body, const char *header,
                         buf_t *out, CURLcode *how)
{
    const char *base = getenv("LABLOOP_URL");
    const char *token = getenv("LABLOOP_TOKEN");
    char *url = lab_asprintf("%s%s", base && *base ? base : "http://127.0.0.1:8470", path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Accept: application/json");
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    if (header)
        h = curl_slist_append(h, header);
    char *auth = NULL;
    if (token && *token) {
        auth = lab_asprintf("Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, req_timeout_s);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "labloop: cannot reach %s: %s\n", url, curl_easy_strerror(rc));
    if (how)
        *how = rc;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(auth);
    free(url);
    return status;
}

static long request(const char *method, const char *path, const char *body, buf_t *out)
{
    return request_with(method, path, body, NULL, out, NULL);
}

/* A problem+json answer as one line: "422 Unprocessable Content: /workflow: required; ...". */
static int refused(long status, const buf_t *b)
{
    json_t *p = b->p ? json_loads(b->p, 0, NULL) : NULL;
    const char *title = p ? json_string_value(json_object_get(p, "title")) : NULL;
    const char *detail = p ? json_string_value(json_object_get(p, "detail")) : NULL;
    fprintf(stderr, "labloop: %ld %s", status, title ? title : "error");
    if (detail && *detail)
        fprintf(stderr, ": %s", detail);
    json_t *errs = p ? json_object_get(p, "errors") : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        fprintf(stderr, "%s %s: %s", i ? ";" : " -", path && *path ? path : "/", msg ? msg : "?");
    }
    fprintf(stderr, "\n");
    json_decref(p);
    return EXIT_REFUSED;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

/* The command being run, for its usage line: set by main from the command table. */
static const char *cmd_name = "", *cmd_usage = "";

static void cmd_usage_print(FILE *out)
{
    fprintf(out, "usage: labloop %s\n", cmd_usage);
}

/* What getopt returned that is not one of the command's own options: -h/--help prints its usage
 * and exits 0; an unknown option or a missing value is a usage error with the usage. */
static int opt_other(int c, char **argv)
{
    if (c == 'h') {
        cmd_usage_print(stdout);
        return 0;
    }
    const char *what = argv[optind - 1];
    char shortopt[3] = {'-', (char)optopt, 0};
    if (optopt && (optind < 2 || strncmp(argv[optind - 1], "--", 2) != 0))
        what = shortopt; /* inside a group of short options such as -xy */
    if (c == ':')
        fprintf(stderr, "labloop %s: %s needs a value\n", cmd_name, what);
    else
        fprintf(stderr, "labloop %s: unknown option %s\n", cmd_name, what);
    cmd_usage_print(stderr);
    return EXIT_USAGE;
}

/* A usage error of the arguments (not the options): the usage on stderr, exit 2. */
static int bad_usage(void)
{
    cmd_usage_print(stderr);
    return EXIT_USAGE;
}

#define HELP_OPT                                                                                   \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* For a command without options of its own: -1 to go on with the arguments at argv[optind],
 * or the exit code (help, or a usage error). */
static int only_help(int argc, char **argv)
{
    static const struct option o[] = {HELP_OPT, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1)
        return opt_other(c, argv);
    return -1;
}

static void print_run_row(json_t *r)
{
    printf("%-36s  %-11s  %-8s  %-20s  %-12s  %s\n", str(r, "id"), str(r, "state"),
           str(r, "priority"), str(r, "workflow"), str(r, "plate"), str(r, "created_at"));
}

static void print_header(void)
{
    printf("%-36s  %-11s  %-8s  %-20s  %-12s  %s\n", "ID", "STATE", "PRIORITY", "WORKFLOW", "PLATE",
           "CREATED");
}

/* An answer to print: the exit code when it is done here (unreachable, refused, printed as
 * --json, not JSON), or -1 with the parsed document in *doc for the caller's table. */
static int answer_doc(long status, buf_t *b, int as_json, json_t **doc)
{
    *doc = NULL;
    if (status == 0)
        return EXIT_UNREACHABLE;
    if (status >= 300)
        return refused(status, b);
    if (as_json) {
        printf("%s\n", b->p ? b->p : "");
        return 0;
    }
    json_error_t jerr;
    *doc = json_loads(b->p ? b->p : "", 0, &jerr);
    if (!*doc) {
        fprintf(stderr, "labloop: the daemon's answer is not JSON: %s\n", jerr.text);
        return EXIT_REFUSED;
    }
    return -1;
}

/* Prints the body as JSON (--json) or through the row printer; returns the exit code. */
static int show(long status, buf_t *b, int as_json, int list)
{
    json_t *doc;
    int code = answer_doc(status, b, as_json, &doc);
    if (code >= 0)
        return code;
    print_header();
    if (list) {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(doc, "runs"), i, r)
        {
            print_run_row(r);
            const char *why = json_string_value(json_object_get(r, "waiting_reason"));
            if (why)
                printf("  waiting: %s\n", why);
        }
        const char *next = json_string_value(json_object_get(doc, "next"));
        if (next)
            printf("(more: --after %s)\n", next);
    } else {
        print_run_row(doc);
        json_t *steps = json_object_get(doc, "steps");
        if (json_array_size(steps))
            printf("\n  %-14s  %-11s  %-12s  %-24s  %-24s  %s\n", "STEP", "STATE", "INSTRUMENT",
                   "STARTED", "ENDED", "LAG_S");
        size_t i;
        json_t *st;
        json_array_foreach(steps, i, st)
        {
            json_t *lag = json_object_get(st, "lag_s");
            char lagtxt[32] = "-";
            if (json_is_number(lag))
                snprintf(lagtxt, sizeof lagtxt, "%.1f%s", json_number_value(lag),
                         json_is_true(json_object_get(st, "lag_violation")) ? " (late)" : "");
            printf("  %-14s  %-11s  %-12s  %-24s  %-24s  %s\n", str(st, "name"), str(st, "state"),
                   str(st, "instrument"), str(st, "started_at"), str(st, "ended_at"), lagtxt);
        }
        const char *why = json_string_value(json_object_get(doc, "waiting_reason"));
        if (!why)
            why = json_string_value(json_object_get(doc, "paused_reason"));
        if (why)
            printf("\n  waiting: %s\n", why);
    }
    json_decref(doc);
    return 0;
}

/* Whether a submission that got no answer, or this answer, is worth sending again with the same
 * Idempotency-Key: the daemon commits it once whatever happens, and answers a repeat with the
 * first answer. */
static bool submit_again(long st, CURLcode how, const buf_t *b)
{
    if (st == 0)
        return how == CURLE_COULDNT_CONNECT || how == CURLE_OPERATION_TIMEDOUT ||
               how == CURLE_GOT_NOTHING || how == CURLE_SEND_ERROR || how == CURLE_RECV_ERROR;
    if (st == 503)
        return true; /* stopping: a restarted daemon takes it */
    return st == 409 && b->p && strstr(b->p, "urn:labloop:problem:idempotency-in-progress");
}

static int cmd_submit(int argc, char **argv, int as_json)
{
    static const struct option o[] = {
        {"plate", required_argument, NULL, 'p'},
        {"priority", required_argument, NULL, 'P'},
        {"score", required_argument, NULL, 's'},
        {"deadline", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'n'},
        {"param", required_argument, NULL, 'k'},
        {"file", required_argument, NULL, 'f'},
        {"idempotency-key", required_argument, NULL, 'i'},
        {"await-workflow", no_argument, NULL, 'w'},
        {"retries", required_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        HELP_OPT,
        {NULL, 0, NULL, 0},
    };
    json_t *doc = json_object(), *params = json_object();
    const char *file = NULL, *key = NULL;
    bool await_wf = false;
    long retries = 4;
    int c, rc = EXIT_USAGE;
    char *body = NULL, *hdr = NULL;
    buf_t b = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, ":f:h", o, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'p':
            json_object_set_new(doc, "plate", json_string(optarg));
            break;
        case 'P':
            json_object_set_new(doc, "priority", json_string(optarg));
            break;
        case 's':
            json_object_set_new(doc, "score", json_real(strtod(optarg, NULL)));
            break;
        case 'd':
            json_object_set_new(doc, "deadline", json_string(optarg));
            break;
        case 'n':
            json_object_set_new(doc, "name", json_string(optarg));
            break;
        case 'k': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "labloop: --param takes KEY=VALUE\n");
                goto done;
            }
            /* A value that parses as JSON (numbers, true, lists) is taken as such. */
            json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
            json_object_setn_new(params, optarg, (size_t)(eq - optarg),
                                 v ? v : json_string(eq + 1));
            break;
        }
        case 'f':
            file = optarg;
            break;
        case 'i':
            if (!*optarg || strlen(optarg) > 255) {
                fprintf(stderr, "labloop: --idempotency-key takes 1 to 255 characters\n");
                goto done;
            }
            key = optarg;
            break;
        case 'w':
            await_wf = true;
            break;
        case 'r':
            retries = strtol(optarg, &end, 10);
            if (*end || end == optarg || retries < 0 || retries > 100) {
                fprintf(stderr, "labloop: --retries takes a whole number from 0 to 100\n");
                goto done;
            }
            break;
        case 't':
            req_timeout_s = strtol(optarg, &end, 10);
            if (*end || end == optarg || req_timeout_s < 1) {
                fprintf(stderr, "labloop: --timeout takes whole seconds > 0\n");
                goto done;
            }
            break;
        default:
            rc = opt_other(c, argv);
            goto done;
        }
    }
    if (file) {
        if (optind != argc)
            goto usage;
        json_error_t jerr;
        json_t *f =
            strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(file, 0, &jerr);
        if (!f) {
            fprintf(stderr, "labloop: %s:%d:%d: %s\n", file, jerr.line, jerr.column, jerr.text);
            goto done;
        }
        if (await_wf && json_is_object(f))
            json_object_set_new(f, "await_workflow", json_true());
        body = json_dumps(f, JSON_COMPACT);
        json_decref(f);
    } else {
        if (optind != argc - 1)
            goto usage;
        json_object_set_new(doc, "workflow", json_string(argv[optind]));
        if (json_object_size(params))
            json_object_set(doc, "params", params);
        if (await_wf)
            json_object_set_new(doc, "await_workflow", json_true());
        body = json_dumps(doc, JSON_COMPACT);
    }
    /* Every submission carries a key, so sending it again after a timeout or a dropped
     * connection cannot make a second run: the daemon answers the repeat with the first run. */
    char made[LAB_UUID_LEN + 1];
    if (!key) {
        lab_uuid4(made);
        key = made;
    }
    hdr = lab_asprintf("Idempotency-Key: %s", key);
    long st;
    for (long attempt = 0;; attempt++) {
        CURLcode how = CURLE_OK;
        free(b.p);
        b = (buf_t){0};
        st = request_with("POST", "/v1/runs", body, hdr, &b, &how);
        if (attempt >= retries || !submit_again(st, how, &b))
            break;
        unsigned ms = 250u << (attempt < 4 ? attempt : 4);
        fprintf(stderr,
                "labloop: submitting again in %.2f s with Idempotency-Key %s (%ld of %ld)\n",
                ms / 1000.0, key, attempt + 1, retries);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (st == 0)
        fprintf(stderr,
                "labloop: the run may or may not be stored; submit again with "
                "--idempotency-key %s to be sure it is stored once\n",
                key);
    rc = show(st, &b, as_json, 0);
    goto done;
usage:
    rc = bad_usage();
done:
    json_decref(doc);
    json_decref(params);
    free(body);
    free(hdr);
    free(b.p);
    return rc;
}

/* The lab's runs (GET /v1/lab/runs): one row per run of the shared queue, with its cell. */
static int show_lab_runs(long status, buf_t *b, int as_json)
{
    json_t *doc;
    int code = answer_doc(status, b, as_json, &doc);
    if (code >= 0)
        return code;
    printf("%-36s  %-9s  %-12s  %-11s  %-20s  %s\n", "ID", "STATE", "CELL", "CELL_STATE",
           "WORKFLOW", "SUBMITTED");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, "items"), i, r)
    {
        printf("%-36s  %-9s  %-12s  %-11s  %-20s  %s\n", str(r, "id"), str(r, "state"),
               str(r, "cell"), str(r, "local_state"), str(r, "workflow"), str(r, "submitted_at"));
        if (json_is_true(json_object_get(r, "stranded")))
            printf("  stranded: %s\n", str(r, "stranded_reason"));
    }
    const char *next = json_string_value(json_object_get(doc, "next"));
    if (next)
        printf("(more: --after %s)\n", next);
    json_decref(doc);
    return 0;
}

static int cmd_runs(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"state", required_argument, NULL, 's'},
                                      {"limit", required_argument, NULL, 'l'},
                                      {"after", required_argument, NULL, 'a'},
                                      {"lab", no_argument, NULL, 'L'},
                                      {"cell", required_argument, NULL, 'c'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    const char *state = NULL, *limit = NULL, *after = NULL, *cell = NULL;
    bool lab = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 's')
            state = optarg;
        else if (c == 'l')
            limit = optarg;
        else if (c == 'a')
            after = optarg;
        else if (c == 'L')
            lab = true;
        else if (c == 'c')
            cell = optarg;
        else
            return opt_other(c, argv);
    }
    if (optind != argc || (cell && !lab))
        return bad_usage();
    CURL *esc = curl_easy_init();
    char *path = lab_strdup(lab ? "/v1/lab/runs?" : "/v1/runs?");
    const char *names[] = {"state", "limit", "after", "cell"};
    const char *vals[] = {state, limit, after, cell};
    for (int i = 0; i < 4; i++) {
        if (!vals[i])
            continue;
        char *e = curl_easy_escape(esc, vals[i], 0);
        char *p = lab_asprintf("%s%s=%s&", path, names[i], e);
        curl_free(e);
        free(path);
        path = p;
    }
    curl_easy_cleanup(esc);
    path[strlen(path) - 1] = '\0';
    buf_t b = {0};
    long st = request("GET", path, NULL, &b);
    int rc = lab ? show_lab_runs(st, &b, as_json) : show(st, &b, as_json, 1);
    free(path);
    free(b.p);
    return rc;
}

/* The lab's cells (GET /v1/lab): state, heartbeat age, runs held, instruments. */
static int cmd_lab(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 0)
        return bad_usage();
    buf_t b = {0};
    long st = request("GET", "/v1/lab", NULL, &b);
    if (st == 0 || st >= 300 || as_json) {
        rc = st == 0 ? EXIT_UNREACHABLE : st >= 300 ? refused(st, &b) : 0;
        if (rc == 0)
            printf("%s\n", b.p ? b.p : "");
        free(b.p);
        return rc;
    }
    json_error_t jerr;
    json_t *doc = json_loads(b.p ? b.p : "", 0, &jerr);
    free(b.p);
    if (!doc) {
        fprintf(stderr, "labloop: the daemon's answer is not JSON: %s\n", jerr.text);
        return EXIT_REFUSED;
    }
    printf("site %s\n", str(doc, "site"));
    printf("%-16s  %-8s  %-10s  %-7s  %-7s  %s\n", "CELL", "STATE", "HEARTBEAT", "CLAIMED",
           "STARTED", "INSTRUMENTS");
    size_t i, k;
    json_t *c, *in;
    json_array_foreach(json_object_get(doc, "cells"), i, c)
    {
        char age[32], insts[512] = "";
        double a = json_number_value(json_object_get(c, "heartbeat_age_s"));
        snprintf(age, sizeof age, "%.1fs%s", a,
                 json_is_true(json_object_get(c, "expired")) ? "!" : "");
        size_t len = 0;
        json_array_foreach(json_object_get(c, "instruments"), k, in)
        {
            int n = snprintf(insts + len, sizeof insts - len, "%s%s(%s,%s)", k ? " " : "",
                             str(in, "id"), str(in, "kind"), str(in, "state"));
            if (n < 0 || (size_t)n >= sizeof insts - len)
                break;
            len += (size_t)n;
        }
        printf("%-16s  %-8s  %-10s  %-7lld  %-7lld  %s\n", str(c, "cell"), str(c, "state"), age,
               (long long)json_integer_value(json_object_get(c, "claimed")),
               (long long)json_integer_value(json_object_get(c, "started")), insts);
    }
    printf("queue:");
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(doc, "queue"), key, v)
        printf(" %s=%lld", key, (long long)json_integer_value(v));
    printf("\n");
    json_decref(doc);
    return 0;
}

/* Where a plate is, in a few words: "inc1 1/3", "reader1", "outside", "in transit to inc1 1/3
 * (load)", "unknown (last at star1)". */
static void plate_where(json_t *loc, char *out, size_t cap)
{
    const char *state = str(loc, "state");
    json_t *site = json_object_get(loc, "site");
    char place[160];
    if (site)
        snprintf(place, sizeof place, "%s %lld/%lld", str(loc, "instrument"),
                 (long long)json_integer_value(json_object_get(site, "cassette")),
                 (long long)json_integer_value(json_object_get(site, "slot")));
    else
        snprintf(place, sizeof place, "%s", str(loc, "instrument"));
    if (strcmp(state, "at") == 0)
        snprintf(out, cap, "%s", place);
    else if (strcmp(state, "in_transit") == 0)
        snprintf(out, cap, "in transit to %s (%s)", place, str(loc, "action"));
    else if (strcmp(state, "unknown") == 0)
        snprintf(out, cap, "UNKNOWN (last at %s)",
                 str(json_object_get(loc, "last_known"), "instrument"));
    else
        snprintf(out, cap, "%s", state);
}

static void print_plate(json_t *p)
{
    json_t *loc = json_object_get(p, "location");
    char where[256];
    plate_where(loc, where, sizeof where);
    printf("plate   %s\n", str(p, "barcode"));
    if (json_is_integer(json_object_get(p, "format")) ||
        json_is_string(json_object_get(p, "labware")))
        printf("format  %lld wells, %s\n",
               (long long)json_integer_value(json_object_get(p, "format")), str(p, "labware"));
    printf("where   %s since %s\n", where, str(loc, "since"));
    if (json_object_get(loc, "why"))
        printf("why     %s\n", str(loc, "why"));
    json_t *sc = json_object_get(p, "scanned");
    if (sc)
        printf("scanned %s on %s at %s (%s)\n", str(sc, "barcode_read"), str(sc, "instrument"),
               str(sc, "at"),
               json_is_true(json_object_get(sc, "matched")) ? "matched" : "MISMATCH");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(p, "contents"), i, e)
        printf("%s %s: %lld wells, %.1f uL (run %s)\n", i ? "       " : "content",
               str(e, "reagent"), (long long)json_integer_value(json_object_get(e, "wells")),
               json_number_value(json_object_get(e, "volume_ul")), str(e, "run"));
    json_array_foreach(json_object_get(p, "runs"), i, e)
        printf("%s %s\n", i ? "       " : "run    ", json_string_value(e) ?: "-");
    json_t *moves = json_object_get(p, "moves");
    if (json_array_size(moves))
        printf("\n  %-4s  %-24s  %-24s  %-24s  %-10s  %-8s  %s\n", "SEQ", "AT", "FROM", "TO",
               "ACTION", "OUTCOME", "BY");
    json_array_foreach(moves, i, e)
    {
        char from[256], to[256];
        plate_where(json_object_get(e, "from"), from, sizeof from);
        plate_where(json_object_get(e, "to"), to, sizeof to);
        printf("  %-4lld  %-24s  %-24s  %-24s  %-10s  %-8s  %s\n",
               (long long)json_integer_value(json_object_get(e, "seq")), str(e, "at"), from, to,
               str(e, "action"), str(e, "outcome"), str(e, "by"));
    }
}

/* labloop plates: where every plate is (a table); labloop plates BARCODE: one plate, its
 * contents and its moves. */
static int cmd_plates(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"location", required_argument, NULL, 's'},
                                      {"instrument", required_argument, NULL, 'i'},
                                      {"limit", required_argument, NULL, 'l'},
                                      {"after", required_argument, NULL, 'a'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    const char *vals[4] = {NULL, NULL, NULL, NULL};
    static const char *const names[] = {"location", "instrument", "limit", "after"};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 's')
            vals[0] = optarg;
        else if (c == 'i')
            vals[1] = optarg;
        else if (c == 'l')
            vals[2] = optarg;
        else if (c == 'a')
            vals[3] = optarg;
        else
            return opt_other(c, argv);
    }
    if (argc - optind > 1 || (argc - optind == 1 && (vals[0] || vals[1] || vals[2] || vals[3])))
        return bad_usage();
    CURL *esc = curl_easy_init();
    char *path;
    if (argc - optind == 1) {
        char *e = curl_easy_escape(esc, argv[optind], 0);
        path = lab_asprintf("/v1/plates/%s", e);
        curl_free(e);
    } else {
        path = lab_strdup("/v1/plates?");
        for (int i = 0; i < 4; i++) {
            if (!vals[i])
                continue;
            char *e = curl_easy_escape(esc, vals[i], 0);
            char *p = lab_asprintf("%s%s=%s&", path, names[i], e);
            curl_free(e);
            free(path);
            path = p;
        }
        path[strlen(path) - 1] = '\0';
    }
    curl_easy_cleanup(esc);
    buf_t b = {0};
    long st = request("GET", path, NULL, &b);
    bool one = argc - optind == 1;
    free(path);
    json_t *doc;
    int code = answer_doc(st, &b, as_json, &doc);
    free(b.p);
    if (code >= 0)
        return code;
    if (one) {
        print_plate(doc);
        json_decref(doc);
        return 0;
    }
    printf("%-24s  %-32s  %-24s  %s\n", "PLATE", "WHERE", "SINCE", "WHY");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(doc, "plates"), i, p)
    {
        json_t *loc = json_object_get(p, "location");
        char where[256];
        plate_where(loc, where, sizeof where);
        printf("%-24s  %-32s  %-24s  %s\n", str(p, "barcode"), where, str(loc, "since"),
               json_object_get(loc, "why") ? str(loc, "why") : "");
    }
    json_array_foreach(json_object_get(doc, "held_sites"), i, p)
    {
        json_t *site = json_object_get(p, "site");
        char where[160];
        snprintf(where, sizeof where, "%s %lld/%lld", str(p, "instrument"),
                 (long long)json_integer_value(json_object_get(site, "cassette")),
                 (long long)json_integer_value(json_object_get(site, "slot")));
        printf("%-24s  %-32s  %-24s  %s\n", "(no barcode)", where, str(p, "since"), str(p, "why"));
    }
    const char *next = json_string_value(json_object_get(doc, "next"));
    if (next)
        printf("(more: --after %s)\n", next);
    json_decref(doc);
    return 0;
}

static int cmd_run(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return bad_usage();
    CURL *esc = curl_easy_init();
    char *e = curl_easy_escape(esc, argv[optind], 0);
    char *path = lab_asprintf("/v1/runs/%s", e);
    curl_free(e);
    curl_easy_cleanup(esc);
    buf_t b = {0};
    long st = request("GET", path, NULL, &b);
    rc = show(st, &b, as_json, 0);
    free(path);
    free(b.p);
    return rc;
}

/* Serial ports as libserialport sees them, with USB identity where there is one: what a
 * technician needs to write an instrument's `port =` line. Needs no daemon. */
static int cmd_ports(int argc, char **argv, int as_json)
{
    int usage_rc = only_help(argc, argv);
    if (usage_rc >= 0)
        return usage_rc;
    if (optind != argc)
        return bad_usage();
    struct sp_port **list = NULL;
    enum sp_return rc = sp_list_ports(&list);
    if (rc != SP_OK) {
        char *msg = sp_last_error_message();
        fprintf(stderr, "labloop: cannot list serial ports: %s\n", msg ? msg : "unknown error");
        sp_free_error_message(msg);
        return EXIT_REFUSED;
    }
    json_t *out = json_array();
    for (int i = 0; list[i]; i++) {
        struct sp_port *p = list[i];
        enum sp_transport t = sp_get_port_transport(p);
        const char *tname = t == SP_TRANSPORT_USB         ? "usb"
                            : t == SP_TRANSPORT_BLUETOOTH ? "bluetooth"
                                                          : "native";
        json_t *o = json_pack("{s:s, s:s}", "port", sp_get_port_name(p), "transport", tname);
        const char *desc = sp_get_port_description(p);
        if (desc)
            json_object_set_new(o, "description", json_string(desc));
        if (t == SP_TRANSPORT_USB) {
            int vid = 0, pid = 0;
            if (sp_get_port_usb_vid_pid(p, &vid, &pid) == SP_OK) {
                char ids[16];
                snprintf(ids, sizeof ids, "%04x", vid);
                json_object_set_new(o, "usb_vid", json_string(ids));
                snprintf(ids, sizeof ids, "%04x", pid);
                json_object_set_new(o, "usb_pid", json_string(ids));
            }
            const char *v;
            if ((v = sp_get_port_usb_serial(p)))
                json_object_set_new(o, "usb_serial", json_string(v));
            if ((v = sp_get_port_usb_manufacturer(p)))
                json_object_set_new(o, "manufacturer", json_string(v));
            if ((v = sp_get_port_usb_product(p)))
                json_object_set_new(o, "product", json_string(v));
        }
        json_array_append_new(out, o);
    }
    sp_free_port_list(list);
    if (as_json) {
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
    } else {
        printf("%-20s  %-9s  %-9s  %-16s  %s\n", "PORT", "TRANSPORT", "VID:PID", "SERIAL",
               "DESCRIPTION");
        size_t i;
        json_t *o;
        json_array_foreach(out, i, o)
        {
            char ids[16] = "-";
            if (json_object_get(o, "usb_vid"))
                snprintf(ids, sizeof ids, "%s:%s", str(o, "usb_vid"), str(o, "usb_pid"));
            printf("%-20s  %-9s  %-9s  %-16s  %s\n", str(o, "port"), str(o, "transport"), ids,
                   str(o, "usb_serial"), str(o, "description"));
        }
    }
    json_decref(out);
    return 0;
}

static int cmd_cancel(int argc, char **argv, int as_json)
{
    static const struct option o[] = {
        {"reason", required_argument, NULL, 'r'}, HELP_OPT, {NULL, 0, NULL, 0}};
    const char *reason = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c != 'r')
            return opt_other(c, argv);
        reason = optarg;
    }
    if (argc - optind != 1)
        return bad_usage();
    json_t *doc = reason ? json_pack("{s:s}", "reason", reason) : json_object();
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    CURL *esc = curl_easy_init();
    char *e = curl_easy_escape(esc, argv[optind], 0);
    char *path = lab_asprintf("/v1/runs/%s/cancel", e);
    curl_free(e);
    curl_easy_cleanup(esc);
    buf_t b = {0};
    long st = request("POST", path, body, &b);
    int rc = show(st, &b, as_json, 0);
    free(path);
    free(body);
    free(b.p);
    return rc;
}

/* POST to PATH_FMT (with the escaped id) a body; prints the answer as a run or as JSON. */
static int post_id(const char *fmt, const char *id, const char *body, int as_json, int is_run)
{
    CURL *esc = curl_easy_init();
    char *e = curl_easy_escape(esc, id, 0);
    char *path = lab_asprintf(fmt, e);
    curl_free(e);
    curl_easy_cleanup(esc);
    buf_t b = {0};
    long st = request("POST", path, body, &b);
    int rc;
    if (is_run) {
        rc = show(st, &b, as_json, 0);
    } else if (st == 0) {
        rc = EXIT_UNREACHABLE;
    } else if (st >= 300) {
        rc = refused(st, &b);
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        if (as_json)
            printf("%s\n", b.p ? b.p : "");
        else
            printf("%s  %s\n", str(doc, "id"), str(doc, "state"));
        json_decref(doc);
        rc = 0;
    }
    free(path);
    free(b.p);
    return rc;
}

static bool looks_like_uuid(const char *s)
{
    return strlen(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-';
}

/* pause INSTRUMENT: an operator's hold on an instrument (its queued work waits). */
static int cmd_pause(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return bad_usage();
    return post_id("/v1/instruments/%s/pause", argv[optind], NULL, as_json, 0);
}

/* record INSTRUMENT on|off: the instrument's wire recording, to the file its config names. */
static int cmd_record(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 2)
        return bad_usage();
    const char *sw = argv[optind + 1];
    if (strcmp(sw, "on") != 0 && strcmp(sw, "off") != 0) {
        fprintf(stderr, "labloop record: '%s' is neither on nor off\n", sw);
        return EXIT_USAGE;
    }
    CURL *esc = curl_easy_init();
    char *e = curl_easy_escape(esc, argv[optind], 0);
    char *path = lab_asprintf("/v1/instruments/%s/record", e);
    curl_free(e);
    curl_easy_cleanup(esc);
    buf_t b = {0};
    long st = request("POST", path, strcmp(sw, "on") == 0 ? "{\"on\":true}" : "{\"on\":false}", &b);
    if (st == 0) {
        rc = EXIT_UNREACHABLE;
    } else if (st >= 300) {
        rc = refused(st, &b);
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        json_t *r = json_object_get(doc, "record");
        if (as_json)
            printf("%s\n", b.p ? b.p : "");
        else
            printf("%s  record %s  %s\n", str(doc, "id"),
                   json_is_true(json_object_get(r, "on")) ? "on" : "off", str(r, "path"));
        json_decref(doc);
        rc = 0;
    }
    free(path);
    free(b.p);
    return rc;
}

/* resume INSTRUMENT, or resume RUN [--skip]: a paused run's stopped step runs again (the
 * default) or is taken as done (--skip: e.g. an interrupted dispense that did happen). */
static int cmd_resume(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"skip", no_argument, NULL, 's'},
                                      {"retry", no_argument, NULL, 'r'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    const char *how = "retry";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 's')
            how = "skip";
        else if (c == 'r')
            how = "retry";
        else
            return opt_other(c, argv);
    }
    if (argc - optind != 1)
        return bad_usage();
    const char *id = argv[optind];
    if (!looks_like_uuid(id))
        return post_id("/v1/instruments/%s/resume", id, NULL, as_json, 0);
    char body[32];
    snprintf(body, sizeof body, "{\"step\":\"%s\"}", how);
    return post_id("/v1/runs/%s/resume", id, body, as_json, 1);
}

/* priority RUN [CLASS] [--score X]: a new priority class and/or score; the plan follows. */
static int cmd_priority(int argc, char **argv, int as_json)
{
    static const struct option o[] = {
        {"score", required_argument, NULL, 's'}, HELP_OPT, {NULL, 0, NULL, 0}};
    const char *score = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c != 's')
            return opt_other(c, argv);
        score = optarg;
    }
    int n = argc - optind;
    if (n < 1 || n > 2 || (n == 1 && !score))
        return bad_usage();
    json_t *doc = json_object();
    if (n == 2)
        json_object_set_new(doc, "priority", json_string(argv[optind + 1]));
    if (score) {
        char *end = NULL;
        double v = strtod(score, &end);
        if (!end || *end || end == score) {
            fprintf(stderr, "labloop: --score '%s' is not a number\n", score);
            json_decref(doc);
            return EXIT_USAGE;
        }
        json_object_set_new(doc, "score", json_real(v));
    }
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int rc = post_id("/v1/runs/%s/priority", argv[optind], body, as_json, 1);
    free(body);
    return rc;
}

/* The plan as a table: what runs where and when, and what waits and why. */
static int cmd_schedule(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (optind != argc)
        return bad_usage();
    buf_t b = {0};
    long st = request("GET", "/v1/schedule", NULL, &b);
    rc = 0;
    if (st == 0) {
        rc = EXIT_UNREACHABLE;
    } else if (st >= 300) {
        rc = refused(st, &b);
    } else if (as_json) {
        printf("%s\n", b.p ? b.p : "");
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        printf("%-12s  %-36s  %-14s  %-10s  %-24s  %s\n", "INSTRUMENT", "RUN", "STEP", "STATE",
               "START", "END");
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(doc, "items"), i, it)
            printf("%-12s  %-36s  %-14s  %-10s  %-24s  %s\n", str(it, "instrument"), str(it, "run"),
                   str(it, "step"), str(it, "state"), str(it, "start"), str(it, "end"));
        json_array_foreach(json_object_get(doc, "waiting"), i, it)
            printf("waiting  %s  %s\n", str(it, "run"), str(it, "reason"));
        printf("now %s, %lld lag violations\n", str(doc, "now"),
               (long long)json_integer_value(json_object_get(doc, "lag_violations")));
        json_decref(doc);
    }
    free(b.p);
    return rc;
}

/* ---- the closed loop ---- */

/* A JSON file (or "-": standard input) as compact text; NULL with the reason printed. */
static char *load_doc(const char *file)
{
    json_error_t jerr;
    json_t *doc =
        strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(file, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "labloop: %s:%d:%d: %s\n", file, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

static char *escaped_path(const char *fmt, const char *id)
{
    CURL *esc = curl_easy_init();
    char *e = curl_easy_escape(esc, id, 0);
    char *path = lab_asprintf(fmt, e);
    curl_free(e);
    curl_easy_cleanup(esc);
    return path;
}

/* Prints the answer as JSON (the closed loop's documents are for scripts first); a table for
 * the lists people read. */
static int answer_json(long st, buf_t *b)
{
    if (st == 0)
        return EXIT_UNREACHABLE;
    if (st >= 300)
        return refused(st, b);
    printf("%s\n", b->p ? b->p : "");
    return 0;
}

/* A candidate's volumes as people read them: 46.2, not 46.200000000000003. */
#define PARAMS_JSON (JSON_COMPACT | JSON_REAL_PRECISION(8))

static void print_campaign(json_t *c)
{
    json_t *n = json_object_get(c, "candidates");
    const char *reason = json_string_value(json_object_get(c, "reason"));
    printf("campaign %s  %s%s%s\n", str(c, "id"), str(c, "state"), reason ? ": " : "",
           reason ? reason : "");
    printf("  workflow %s, learner %s, plates made %lld\n", str(c, "workflow"),
           str(json_object_get(c, "learner"), "kind"),
           (long long)json_integer_value(json_object_get(c, "plates_made")));
    const char *states[] = {"candidate", "staged",    "running", "completed",
                            "failed",    "abandoned", "stale"};
    printf("  candidates:");
    for (size_t i = 0; i < sizeof states / sizeof *states; i++)
        printf(" %s %lld", states[i], (long long)json_integer_value(json_object_get(n, states[i])));
    printf("\n");
    json_t *best = json_object_get(c, "best");
    if (best) {
        char *params = json_dumps(json_object_get(best, "params"), PARAMS_JSON);
        printf("  best %.4f  candidate %s (batch %s)  %s\n",
               json_number_value(json_object_get(best, "value")), str(best, "candidate"),
               str(best, "batch"), params ? params : "");
        free(params);
    }
}

static int cmd_campaign(int argc, char **argv, int as_json)
{
    buf_t b = {0};
    long st;
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    argc -= optind - 1; /* the words after the options, as argv[1].. */
    argv += optind - 1;
    if (argc == 3 && strcmp(argv[1], "create") == 0) {
        char *doc = load_doc(argv[2]);
        if (!doc)
            return EXIT_USAGE;
        st = request("POST", "/v1/campaigns", doc, &b);
        free(doc);
    } else if (argc == 3 && (strcmp(argv[1], "pause") == 0 || strcmp(argv[1], "resume") == 0)) {
        char *path = escaped_path(strcmp(argv[1], "pause") == 0 ? "/v1/campaigns/%s/pause"
                                                                : "/v1/campaigns/%s/resume",
                                  argv[2]);
        st = request("POST", path, NULL, &b);
        free(path);
    } else if (argc == 2 && strcmp(argv[1], "create") != 0) {
        char *path = escaped_path("/v1/campaigns/%s", argv[1]);
        st = request("GET", path, NULL, &b);
        free(path);
    } else {
        return bad_usage();
    }
    if (as_json || st == 0 || st >= 300) {
        rc = answer_json(st, &b);
    } else {
        json_t *c = json_loads(b.p ? b.p : "", 0, NULL);
        print_campaign(c);
        json_decref(c);
        rc = 0;
    }
    free(b.p);
    return rc;
}

static int cmd_batch(int argc, char **argv, int as_json)
{
    (void)as_json;
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 3 || strcmp(argv[optind], "push") != 0)
        return bad_usage();
    char *doc = load_doc(argv[optind + 2]);
    if (!doc)
        return EXIT_USAGE;
    char *path = escaped_path("/v1/campaigns/%s/batches", argv[optind + 1]);
    buf_t b = {0};
    long st = request("POST", path, doc, &b);
    rc = answer_json(st, &b);
    free(path);
    free(doc);
    free(b.p);
    return rc;
}

/* A candidate's plate: the one it is on while staged or running; after, the plate its result
 * came from, or else the last plate it was tried on; "-" before it had one. */
static const char *candidate_plate(json_t *k)
{
    const char *p = json_string_value(json_object_get(k, "plate"));
    if (!p)
        p = json_string_value(json_object_get(json_object_get(k, "result"), "plate"));
    json_t *tries = json_object_get(k, "plates");
    if (!p && json_array_size(tries))
        p = json_string_value(
            json_object_get(json_array_get(tries, json_array_size(tries) - 1), "plate"));
    return p ? p : "-";
}

static int cmd_candidates(int argc, char **argv, int as_json)
{
    static const struct option o[] = {
        {"state", required_argument, NULL, 's'}, HELP_OPT, {NULL, 0, NULL, 0}};
    const char *state = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":s:h", o, NULL)) != -1) {
        if (c != 's')
            return opt_other(c, argv);
        state = optarg;
    }
    if (optind != argc - 1)
        return bad_usage();
    char *full = escaped_path("/v1/campaigns/%s/candidates", argv[optind]);
    if (state) {
        char *q = escaped_path("%s", state), *with = lab_asprintf("%s?state=%s", full, q);
        free(q);
        free(full);
        full = with;
    }
    buf_t b = {0};
    long st = request("GET", full, NULL, &b);
    int rc = 0;
    if (as_json || st == 0 || st >= 300) {
        rc = answer_json(st, &b);
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        printf("%-16s  %-10s  %-12s  %-18s  %-8s  %s\n", "CANDIDATE", "STATE", "BATCH", "PLATE",
               "SCORE", "PARAMS / WHY");
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(doc, "candidates"), i, k)
        {
            char *params = json_dumps(json_object_get(k, "params"), PARAMS_JSON);
            const char *reason = json_string_value(json_object_get(k, "reason"));
            printf("%-16s  %-10s  %-12s  %-18s  %8.4g  %s%s%s\n", str(k, "id"), str(k, "state"),
                   str(k, "batch"), candidate_plate(k),
                   json_number_value(json_object_get(k, "score")), params ? params : "",
                   reason ? "  " : "", reason ? reason : "");
            free(params);
        }
        json_decref(doc);
    }
    free(full);
    free(b.p);
    return rc;
}

static int cmd_results(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return bad_usage();
    char *path = escaped_path("/v1/campaigns/%s/results", argv[optind]);
    buf_t b = {0};
    long st = request("GET", path, NULL, &b);
    rc = 0;
    if (as_json || st == 0 || st >= 300) {
        rc = answer_json(st, &b);
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        printf("%-16s  %-12s  %-9s  %-7s  %-6s  %s\n", "CANDIDATE", "BATCH", "VALUE", "SD", "Z'",
               "PARAMS");
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(doc, "results"), i, r)
        {
            char *params = json_dumps(json_object_get(r, "params"), PARAMS_JSON);
            printf("%-16s  %-12s  %9.4f  %7.4f  %6.3f  %s\n", str(r, "candidate"), str(r, "batch"),
                   json_number_value(json_object_get(r, "value")),
                   json_number_value(json_object_get(r, "sd")),
                   json_number_value(json_object_get(r, "z_prime")), params ? params : "");
            free(params);
        }
        json_decref(doc);
    }
    free(path);
    free(b.p);
    return rc;
}

/* A day's work tried before it is run: no daemon needed. */
static int cmd_plan(int argc, char **argv, int as_json)
{
    (void)as_json; /* the plan is JSON either way */
    static const struct option o[] = {{"budget-ms", required_argument, NULL, 'b'},
                                      {"seed", required_argument, NULL, 's'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    plan_options_t opt = {.budget_ms = 2000, .seed = 1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c != 'b' && c != 's')
            return opt_other(c, argv);
        char *end;
        long v = strtol(optarg, &end, 10);
        if (*end || v < 0) {
            fprintf(stderr, "labloop: --%s takes a whole number >= 0\n",
                    c == 'b' ? "budget-ms" : "seed");
            return EXIT_USAGE;
        }
        if (c == 'b')
            opt.budget_ms = v;
        else
            opt.seed = (unsigned long)v;
    }
    if (argc - optind != 1)
        return bad_usage();
    json_error_t je;
    json_t *doc = strcmp(argv[optind], "-") == 0 ? json_loadf(stdin, 0, &je)
                                                 : json_load_file(argv[optind], 0, &je);
    if (!doc) {
        fprintf(stderr, "labloop: %s: line %d, column %d: %s\n", argv[optind], je.line, je.column,
                je.text);
        return EXIT_REFUSED;
    }
    plan_problem_t p;
    lab_jerrs_t errs = {0};
    int n = plan_from_json(doc, &p, &errs);
    json_decref(doc);
    if (n > 0) {
        for (int i = 0; i < errs.n; i++)
            fprintf(stderr, "labloop: %s: %s: %s\n", argv[optind],
                    errs.v[i].path[0] ? errs.v[i].path : "/", errs.v[i].message);
        lab_jerrs_free(&errs);
        return EXIT_REFUSED;
    }
    lab_jerrs_free(&errs);
    plan_result_t r;
    plan_solve(&p, &opt, &r);
    char why[400];
    if (plan_verify(&p, &r, why, sizeof why) != 0) { /* a bug, never a plan to follow */
        fprintf(stderr, "labloop: the plan breaks a constraint: %s\n", why);
        plan_result_free(&r);
        plan_problem_free(&p);
        return EXIT_REFUSED;
    }
    json_t *out = plan_to_json(&p, &r);
    char *text = json_dumps(out, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    printf("%s\n", text);
    free(text);
    json_decref(out);
    plan_result_free(&r);
    plan_problem_free(&p);
    return 0;
}

/* ---- instruments ---- */

/* "temperature_c=37.0 humidity_pct=90.1" */
static void print_values(json_t *vals, int width)
{
    const char *k;
    json_t *v;
    int n = 0;
    char line[512] = "";
    json_object_foreach(vals, k, v)
    {
        if (json_is_number(v) && (size_t)n < sizeof line)
            n += snprintf(line + n, sizeof line - (size_t)n, "%s%s=%g", n ? " " : "", k,
                          json_number_value(v));
    }
    printf("%-*s", width, n ? line : "-");
}

static void print_instrument_row(json_t *r)
{
    json_t *le = json_object_get(r, "last_error");
    printf("%-14s  %-15s  %-8s  %-19s  ", str(r, "id"), str(r, "kind"), str(r, "state"),
           str(r, "driver"));
    print_values(json_object_get(json_object_get(r, "telemetry"), "values"), 40);
    printf("  %s\n", json_is_object(le) ? str(le, "message") : "");
}

static int cmd_instruments(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1)
        return bad_usage();
    argc -= optind - 1; /* the instrument, when given, as argv[1] */
    argv += optind - 1;
    char *path =
        argc == 2 ? escaped_path("/v1/instruments/%s", argv[1]) : lab_asprintf("/v1/instruments");
    buf_t b = {0};
    long st = request("GET", path, NULL, &b);
    free(path);
    rc = 0;
    if (st == 0)
        rc = EXIT_UNREACHABLE;
    else if (st >= 300)
        rc = refused(st, &b);
    else if (as_json)
        printf("%s\n", b.p ? b.p : "");
    else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        printf("%-14s  %-15s  %-8s  %-19s  %-40s  %s\n", "ID", "KIND", "STATE", "DRIVER",
               "TELEMETRY", "LAST ERROR");
        if (argc == 2) {
            print_instrument_row(doc);
            printf("\nmodel: %s\n", str(doc, "model"));
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(doc, "info"), k, v)
            {
                if (strcmp(k, "driver") == 0 || strcmp(k, "model") == 0)
                    continue;
                char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("%s: %s\n", k, t ? t : "?");
                free(t);
            }
            printf("actions:\n");
            size_t i;
            json_t *a;
            json_array_foreach(json_object_get(doc, "actions"), i, a)
            {
                printf("  %-18s %s\n", str(a, "name"), str(a, "help"));
                json_t *props = json_object_get(json_object_get(a, "params"), "properties");
                json_object_foreach(props, k, v)
                {
                    json_t *req = json_object_get(json_object_get(a, "params"), "required");
                    bool needed = false;
                    size_t j;
                    json_t *r;
                    json_array_foreach(req, j, r) needed |= strcmp(json_string_value(r), k) == 0;
                    printf("      %s=%s%s\n", k, str(v, "type"), needed ? " (required)" : "");
                }
            }
        } else {
            size_t i;
            json_t *r;
            json_array_foreach(json_object_get(doc, "instruments"), i, r) print_instrument_row(r);
        }
        json_decref(doc);
    }
    free(b.p);
    return rc;
}

/* One liquid handler's tips and troughs, for people. */
static void print_consumables(json_t *doc)
{
    json_t *tips = json_object_get(doc, "tips");
    printf("%s\n", str(doc, "instrument"));
    if (json_is_object(tips))
        printf("  tips %-22s %10lld of %-10lld left  %lld reserved  (%lld racks of %lld)\n", "",
               (long long)json_integer_value(json_object_get(tips, "left")),
               (long long)json_integer_value(json_object_get(tips, "total")),
               (long long)json_integer_value(json_object_get(tips, "reserved")),
               (long long)json_integer_value(json_object_get(tips, "racks")),
               (long long)json_integer_value(json_object_get(tips, "per_rack")));
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(doc, "troughs"), i, t)
    {
        printf("  trough %-20s %10.1f of %-10.1f µL left  %.1f reserved\n", str(t, "name"),
               json_number_value(json_object_get(t, "left_ul")),
               json_number_value(json_object_get(t, "total_ul")),
               json_number_value(json_object_get(t, "reserved_ul")));
    }
    json_t *last = json_object_get(doc, "last");
    if (json_is_object(last))
        printf("  last: %s%s%s by %s at %s\n", str(last, "action"),
               json_object_get(last, "outcome") ? " " : "",
               json_object_get(last, "outcome") ? str(last, "outcome") : "", str(last, "by"),
               str(last, "at"));
}

/* consumables [INSTRUMENT]: what the liquid handlers' tip racks and troughs hold; without an
 * instrument every one that declares them. */
static int cmd_consumables(int argc, char **argv, int as_json)
{
    int rc = only_help(argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1)
        return bad_usage();
    json_t *ids = json_array();
    buf_t b = {0};
    long st;
    if (argc - optind == 1) {
        json_array_append_new(ids, json_string(argv[optind]));
    } else {
        st = request("GET", "/v1/instruments", NULL, &b);
        if (st == 0 || st >= 300) {
            rc = st == 0 ? EXIT_UNREACHABLE : refused(st, &b);
            free(b.p);
            json_decref(ids);
            return rc;
        }
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(doc, "instruments"), i, r)
        {
            if (strcmp(str(r, "kind"), "liquid_handler") == 0)
                json_array_append(ids, json_object_get(r, "id"));
        }
        json_decref(doc);
        free(b.p);
        b.p = NULL;
    }
    json_t *all = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        char *path = escaped_path("/v1/instruments/%s/consumables", json_string_value(id));
        b = (buf_t){0};
        st = request("GET", path, NULL, &b);
        free(path);
        if (st == 404 && json_array_size(ids) > 1) { /* declares none */
            free(b.p);
            continue;
        }
        if (st == 0 || st >= 300) {
            rc = st == 0 ? EXIT_UNREACHABLE : refused(st, &b);
            free(b.p);
            break;
        }
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        free(b.p);
        if (doc)
            json_array_append_new(all, doc);
    }
    if (rc == -1)
        rc = 0;
    if (rc == 0 && as_json) {
        json_t *out = json_array_size(ids) == 1 && json_array_size(all) == 1
                          ? json_incref(json_array_get(all, 0))
                          : json_pack("{s:O}", "consumables", all);
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text ? text : "null");
        free(text);
        json_decref(out);
    } else if (rc == 0) {
        json_t *doc;
        json_array_foreach(all, i, doc) print_consumables(doc);
    }
    json_decref(all);
    json_decref(ids);
    return rc;
}

/* refill INSTRUMENT --trough NAME[=UL] | --tips | --racks N [--reason TEXT]: an operator filled a
 * trough (to UL, or full) or put fresh tip racks in (every one, or N). */
static int cmd_refill(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"trough", required_argument, NULL, 't'},
                                      {"tips", no_argument, NULL, 'a'},
                                      {"racks", required_argument, NULL, 'n'},
                                      {"reason", required_argument, NULL, 'r'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    const char *trough = NULL, *reason = NULL, *racks = NULL;
    bool tips = false;
    int c, what = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 't')
            trough = optarg, what++;
        else if (c == 'a')
            tips = true, what++;
        else if (c == 'n')
            racks = optarg, what++;
        else if (c == 'r')
            reason = optarg;
        else
            return opt_other(c, argv);
    }
    if (argc - optind != 1 || what != 1)
        return bad_usage();
    json_t *body = json_object();
    if (trough) {
        const char *eq = strrchr(trough, '=');
        char *name = eq ? strndup(trough, (size_t)(eq - trough)) : strdup(trough);
        json_object_set_new(body, "trough", json_string(name));
        free(name);
        if (eq) {
            char *end;
            double ul = strtod(eq + 1, &end);
            if (end == eq + 1 || *end) {
                fprintf(stderr, "labloop refill: '%s' is not a volume in µL\n", eq + 1);
                json_decref(body);
                return EXIT_USAGE;
            }
            json_object_set_new(body, "volume_ul", json_real(ul));
        }
    } else if (tips) {
        json_object_set_new(body, "tips", json_string("all"));
    } else {
        char *end;
        long n = strtol(racks, &end, 10);
        if (end == racks || *end) {
            fprintf(stderr, "labloop refill: '%s' is not a number of racks\n", racks);
            json_decref(body);
            return EXIT_USAGE;
        }
        json_object_set_new(body, "tips", json_pack("{s:I}", "racks", (json_int_t)n));
    }
    if (reason)
        json_object_set_new(body, "reason", json_string(reason));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *path = escaped_path("/v1/instruments/%s/consumables/refill", argv[optind]);
    buf_t b = {0};
    long st = request("POST", path, text, &b);
    int rc = 0;
    if (st == 0) {
        rc = EXIT_UNREACHABLE;
    } else if (st >= 300) {
        rc = refused(st, &b);
    } else if (as_json) {
        printf("%s\n", b.p ? b.p : "");
    } else {
        json_t *doc = json_loads(b.p ? b.p : "", 0, NULL);
        print_consumables(doc);
        json_decref(doc);
    }
    free(path);
    free(text);
    free(b.p);
    return rc;
}

/* k=v: a number, true/false/null, JSON ({..}, [..], "..") or else a string. */
static json_t *param_value(const char *v)
{
    json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
    if (j && (json_is_number(j) || json_is_boolean(j) || json_is_null(j) || json_is_object(j) ||
              json_is_array(j) || v[0] == '"'))
        return j;
    json_decref(j);
    return json_string(v);
}

static int cmd_action(int argc, char **argv, int as_json)
{
    static const struct option o[] = {
        {"timeout", required_argument, NULL, 't'},
        {"plate", required_argument, NULL, 'p'},
        HELP_OPT,
        {NULL, 0, NULL, 0},
    };
    double timeout = 0;
    const char *plate = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 't') {
            char *end;
            timeout = strtod(optarg, &end);
            if (*end || timeout <= 0) {
                fprintf(stderr, "labloop: --timeout takes lab seconds > 0\n");
                return EXIT_USAGE;
            }
        } else if (c == 'p') {
            plate = optarg;
        } else {
            return opt_other(c, argv);
        }
    }
    if (argc - optind < 2)
        return bad_usage();
    const char *id = argv[optind], *name = argv[optind + 1];
    /* The action's schema says which parameters are strings: "plate=0042" stays "0042". */
    json_t *props = NULL;
    char *ipath = escaped_path("/v1/instruments/%s", id);
    buf_t ib = {0};
    if (request("GET", ipath, NULL, &ib) == 200) {
        json_t *inst = json_loads(ib.p, 0, NULL);
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(inst, "actions"), i,
                           a) if (strcmp(str(a, "name"), name) == 0) props =
            json_incref(json_object_get(json_object_get(a, "params"), "properties"));
        json_decref(inst);
    }
    free(ipath);
    free(ib.p);
    json_t *params = json_object();
    for (int i = optind + 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            fprintf(stderr, "labloop: '%s' is not KEY=VALUE\n", argv[i]);
            json_decref(params);
            json_decref(props);
            return EXIT_USAGE;
        }
        char *key = lab_strndup(argv[i], (size_t)(eq - argv[i]));
        const char *type = json_string_value(json_object_get(json_object_get(props, key), "type"));
        json_object_set_new(params, key,
                            type && strcmp(type, "string") == 0 ? json_string(eq + 1)
                                                                : param_value(eq + 1));
        free(key);
    }
    json_decref(props);
    json_t *doc = json_pack("{s:s, s:o}", "action", name, "params", params);
    if (timeout > 0)
        json_object_set_new(doc, "timeout_s", json_real(timeout));
    /* the plate it handles, for the plate registry; a barcode that is not UTF-8 the daemon
     * refuses when the body is not JSON */
    if (plate && json_object_set_new(doc, "plate", json_string(plate)) != 0) {
        fprintf(stderr, "labloop: --plate is not UTF-8 text\n");
        json_decref(doc);
        return EXIT_USAGE;
    }
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *path = escaped_path("/v1/instruments/%s/actions", id);
    req_timeout_s = 0;
    buf_t b = {0};
    long st = request("POST", path, body, &b);
    free(path);
    free(body);
    int rc = 0;
    if (st == 0) {
        rc = EXIT_UNREACHABLE;
    } else if (st >= 300) {
        rc = refused(st, &b);
        json_t *p = json_loads(b.p ? b.p : "", 0, NULL);
        json_t *ie = json_object_get(p, "instrument_error");
        if (json_is_object(ie) && json_object_get(ie, "device_code"))
            fprintf(stderr, "labloop: device code %s\n", str(ie, "device_code"));
        json_decref(p);
    } else {
        json_t *ans = json_loads(b.p ? b.p : "", 0, NULL);
        char *t = json_dumps(json_object_get(ans, "result"),
                             (as_json ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER) |
                                 JSON_REAL_PRECISION(10));
        printf("%s\n", t ? t : "{}");
        free(t);
        json_decref(ans);
    }
    free(b.p);
    return rc;
}

/* ---- watch: the event stream ---- */

static volatile sig_atomic_t watch_stop;

static void on_sigint(int sig)
{
    (void)sig;
    watch_stop = 1;
}

typedef struct watch {
    int as_json;
    long long last; /* the newest id seen, -1 before any */
    char *line;     /* the line being received */
    size_t n, cap;
    char *id, *event;
    buf_t data;
    long long printed;
} watch_t;

static void watch_field(char **f, const char *v)
{
    free(*f);
    *f = lab_strdup(v);
}

/* One event is complete (a blank line): print it. */
static void watch_dispatch(watch_t *w)
{
    if (w->id) {
        char *end;
        long long id = strtoll(w->id, &end, 10);
        if (*w->id && !*end)
            w->last = id;
    }
    if (!w->data.p) /* a comment or a retry: field only */
        goto out;
    const char *kind = w->event ? w->event : "message";
    json_t *d = json_loads(w->data.p, 0, NULL);
    if (strcmp(kind, "reset") == 0) {
        long long oldest = (long long)json_integer_value(json_object_get(d, "oldest"));
        if (w->as_json)
            printf("{\"seq\":null,\"kind\":\"reset\",\"data\":{\"oldest\":%lld}}\n", oldest);
        else
            fprintf(stderr, "labloop watch: events before %lld are no longer kept (reset)\n",
                    oldest);
    } else if (w->as_json) {
        json_t *o = json_pack("{s:I, s:s, s:O?, s:O?, s:O?}", "seq", (json_int_t)w->last, "kind",
                              kind, "key", json_object_get(d, "key"), "ts",
                              json_object_get(d, "ts"), "data", json_object_get(d, "data"));
        char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (t)
            printf("%s\n", t);
        free(t);
        json_decref(o);
    } else {
        json_t *data = json_object_get(d, "data");
        char *t = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        printf("%lld %s %s %s\n", w->last, kind, str(d, "key"), t ? t : w->data.p);
        free(t);
    }
    w->printed++;
    fflush(stdout);
    json_decref(d);
out:
    free(w->id);
    free(w->event);
    free(w->data.p);
    w->id = w->event = NULL;
    w->data = (buf_t){0};
}

static void watch_line(watch_t *w, char *line)
{
    if (!*line) {
        watch_dispatch(w);
        return;
    }
    if (*line == ':')
        return;
    char *v = strchr(line, ':');
    if (v) {
        *v++ = 0;
        if (*v == ' ')
            v++;
    } else {
        v = line + strlen(line);
    }
    if (strcmp(line, "id") == 0) {
        watch_field(&w->id, v);
    } else if (strcmp(line, "event") == 0) {
        watch_field(&w->event, v);
    } else if (strcmp(line, "data") == 0) {
        if (w->data.p)
            on_body("\n", 1, 1, &w->data);
        on_body(v, 1, strlen(v), &w->data);
    }
}

static size_t watch_body(char *data, size_t size, size_t nmemb, void *arg)
{
    watch_t *w = arg;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (c == '\n') {
            if (w->n && w->line[w->n - 1] == '\r')
                w->n--;
            w->line[w->n] = 0;
            watch_line(w, w->line);
            w->n = 0;
            continue;
        }
        if (w->n + 2 > w->cap) {
            w->cap = w->cap ? 2 * w->cap : 256;
            w->line = lab_realloc(w->line, w->cap);
        }
        w->line[w->n++] = c;
    }
    return n;
}

static int watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    return watch_stop ? 1 : 0;
}

/* One connection: the HTTP status (0: not reached, or cut; *how says why). */
static long watch_once(watch_t *w, const char *query, CURLcode *how)
{
    const char *base = getenv("LABLOOP_URL");
    const char *token = getenv("LABLOOP_TOKEN");
    char *url =
        lab_asprintf("%s/v1/events%s", base && *base ? base : "http://127.0.0.1:8470", query);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Accept: text/event-stream");
    char *auth = NULL, *lei = NULL;
    if (token && *token) {
        auth = lab_asprintf("Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (w->last >= 0) {
        lei = lab_asprintf("Last-Event-ID: %lld", w->last);
        h = curl_slist_append(h, lei);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, watch_progress);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    /* The daemon sends a keepalive every 15 s: a minute without a byte is a dead connection. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    w->n = 0;
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && status != 0) { /* a refusal: the body is a problem, not events */
        free(w->line);
        w->line = NULL;
        w->cap = w->n = 0;
    }
    *how = rc;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(auth);
    free(lei);
    free(url);
    return status;
}

/* A refusal (400, 401, 403): asked again as a plain request so its problem can be shown. */
static int watch_refused(const char *query)
{
    buf_t b = {0};
    char *path = lab_asprintf("/v1/events%s", query);
    req_timeout_s = 5;
    long st = request("GET", path, NULL, &b);
    free(path);
    int rc = st >= 400 ? refused(st, &b) : EXIT_REFUSED;
    free(b.p);
    return rc;
}

static int cmd_watch(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"kind", required_argument, NULL, 'k'},
                                      {"after", required_argument, NULL, 'a'},
                                      {"json", no_argument, NULL, 'j'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    watch_t w = {.as_json = as_json, .last = -1};
    buf_t kinds = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":k:a:jh", o, NULL)) != -1) {
        if (c == 'k') {
            if (!*optarg || strpbrk(optarg, ",&#=? ")) {
                fprintf(stderr, "labloop watch: --kind takes one kind, e.g. run.state\n");
                free(kinds.p);
                return bad_usage();
            }
            if (kinds.p)
                on_body(",", 1, 1, &kinds);
            on_body(optarg, 1, strlen(optarg), &kinds);
        } else if (c == 'a') {
            char *end;
            w.last = strtoll(optarg, &end, 10);
            if (!*optarg || *end || w.last < 0) {
                fprintf(stderr, "labloop watch: --after takes an event id (a number)\n");
                free(kinds.p);
                return bad_usage();
            }
        } else if (c == 'j') {
            w.as_json = 1;
        } else {
            free(kinds.p);
            return opt_other(c, argv);
        }
    }
    if (optind != argc) {
        free(kinds.p);
        return bad_usage();
    }
    char *query = lab_asprintf("%s%s", kinds.p ? "?kinds=" : "", kinds.p ? kinds.p : "");
    free(kinds.p);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = 0, backoff_ms = 500;
    while (!watch_stop) {
        CURLcode how;
        long long before = w.printed;
        long st = watch_once(&w, query, &how);
        if (watch_stop)
            break;
        if (st >= 400 && st != 503) {
            rc = watch_refused(query);
            break;
        }
        if (w.printed > before)
            backoff_ms = 500;
        fprintf(stderr, "labloop watch: %s; reconnecting after %lld\n",
                st == 200 ? "the stream ended"
                : st      ? "the daemon is busy (503)"
                          : curl_easy_strerror(how),
                w.last);
        for (int waited = 0; waited < backoff_ms && !watch_stop; waited += 100)
            nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
        backoff_ms = backoff_ms * 2 > 10000 ? 10000 : backoff_ms * 2;
    }
    free(query);
    free(w.line);
    free(w.id);
    free(w.event);
    free(w.data.p);
    return rc;
}

/* ---- audit: reading the trail, and checking the chain in the daemon and in PostgreSQL ---- */

static void print_audit_row(json_t *e)
{
    json_t *sig = json_object_get(json_object_get(e, "doc"), "signature");
    const char *why = json_string_value(json_object_get(e, "why"));
    const char *subject = json_string_value(json_object_get(e, "subject"));
    printf("%-6lld  %-24s  %-16s  %-22s  %-36s  %s%s%s\n",
           (long long)json_integer_value(json_object_get(e, "seq")), str(e, "wall_time"),
           str(e, "who"), str(e, "what"), subject ? subject : "-", sig ? str(sig, "meaning") : "",
           sig && why ? ": " : "", why ? why : "");
}

static int audit_list(const char *run, const char *who, const char *since, const char *limit,
                      const char *after, int as_json)
{
    CURL *esc = curl_easy_init();
    char *path = lab_strdup("/v1/audit?");
    const char *names[] = {"run", "who", "since", "limit", "after"};
    const char *vals[] = {run, who, since, limit, after};
    for (int i = 0; i < 5; i++) {
        if (!vals[i])
            continue;
        char *e = curl_easy_escape(esc, vals[i], 0);
        char *p = lab_asprintf("%s%s=%s&", path, names[i], e);
        curl_free(e);
        free(path);
        path = p;
    }
    curl_easy_cleanup(esc);
    path[strlen(path) - 1] = '\0';
    buf_t b = {0};
    json_t *doc;
    int rc = answer_doc(request("GET", path, NULL, &b), &b, as_json, &doc);
    free(path);
    free(b.p);
    if (rc >= 0)
        return rc;
    printf("%-6s  %-24s  %-16s  %-22s  %-36s  %s\n", "SEQ", "WALL_TIME", "WHO", "WHAT", "SUBJECT",
           "MEANING: WHY");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "entries"), i, e) print_audit_row(e);
    const char *next = json_string_value(json_object_get(doc, "next"));
    if (next)
        printf("(more: --after %s)\n", next);
    json_decref(doc);
    return 0;
}

static void print_problem(void *ctx, int64_t seq, const char *problem)
{
    printf("  %s seq %lld: %s\n", (const char *)ctx, (long long)seq, problem);
}

/* Every cell's chain in labloop.audit, each hash recomputed here: nothing of the daemon's is
 * trusted. Returns the number of problems, or -1 when PostgreSQL could not be read. */
static int audit_verify_pg(const char *conninfo, const char *cell)
{
    PGconn *c = PQconnectdb(conninfo ? conninfo : "");
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "labloop: PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    const char *params[1] = {cell};
    PGresult *r = PQexecParams(c,
                               "SELECT cell, seq, prev_hash, hash, who, what, subject, why, entry "
                               "FROM labloop.audit WHERE $1::text IS NULL OR cell = $1 "
                               "ORDER BY cell, seq",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "labloop: PostgreSQL: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return -1;
    }
    int n = PQntuples(r), problems = 0, cells = 0;
    lab_chain_row_t *rows = lab_calloc(n ? (size_t)n : 1, sizeof *rows);
    for (int i = 0; i < n; i++) {
        const char **f[] = {&rows[i].prev_hash, &rows[i].hash, &rows[i].who,  &rows[i].what,
                            &rows[i].subject,   &rows[i].why,  &rows[i].entry};
        rows[i].seq = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        for (int k = 0; k < 7; k++)
            *f[k] = PQgetisnull(r, i, k + 2) ? NULL : PQgetvalue(r, i, k + 2);
    }
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && strcmp(PQgetvalue(r, j, 0), PQgetvalue(r, i, 0)) == 0)
            j++;
        char label[160];
        snprintf(label, sizeof label, "postgresql cell %s", PQgetvalue(r, i, 0));
        int p = lab_chain_check(rows + i, j - i, 1, print_problem, label);
        printf("%s: %s, %d entries, head seq %lld hash %s\n", label, p ? "TAMPERED" : "ok", j - i,
               (long long)rows[j - 1].seq, rows[j - 1].hash ? rows[j - 1].hash : "-");
        problems += p;
        cells++;
        i = j;
    }
    if (!cells)
        printf("postgresql: no audit entries%s%s\n", cell ? " for cell " : "", cell ? cell : "");
    free(rows);
    PQclear(r);
    PQfinish(c);
    return problems;
}

static int audit_verify(const char *pg, const char *cell, bool use_pg, int as_json)
{
    buf_t b = {0};
    json_t *doc;
    long st = request("GET", "/v1/audit/verify", NULL, &b);
    int rc = answer_doc(st, &b, 0, &doc);
    free(b.p);
    int problems = 0;
    if (rc == EXIT_UNREACHABLE && use_pg)
        fprintf(stderr, "labloop: the daemon could not be reached; PostgreSQL is checked alone\n");
    else if (rc >= 0)
        return rc;
    if (doc) {
        json_t *head = json_object_get(doc, "head");
        printf("daemon: %s, %lld entries, head seq %lld hash %s\n",
               json_is_true(json_object_get(doc, "ok")) ? "ok" : "TAMPERED",
               (long long)json_integer_value(json_object_get(doc, "entries")),
               (long long)json_integer_value(json_object_get(head, "seq")), str(head, "hash"));
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(doc, "problems"), i, p)
        {
            print_problem("daemon", json_integer_value(json_object_get(p, "seq")),
                          str(p, "problem"));
            problems++;
        }
        json_decref(doc);
    }
    if (use_pg) {
        int p = audit_verify_pg(pg, cell);
        if (p < 0)
            return EXIT_UNREACHABLE;
        problems += p;
    }
    (void)as_json;
    if (!doc && !use_pg)
        return EXIT_UNREACHABLE;
    return problems ? EXIT_REFUSED : 0;
}

static int cmd_audit(int argc, char **argv, int as_json)
{
    static const struct option o[] = {{"run", required_argument, NULL, 'r'},
                                      {"who", required_argument, NULL, 'w'},
                                      {"since", required_argument, NULL, 's'},
                                      {"limit", required_argument, NULL, 'l'},
                                      {"after", required_argument, NULL, 'a'},
                                      {"pg", required_argument, NULL, 'p'},
                                      {"cell", required_argument, NULL, 'c'},
                                      HELP_OPT,
                                      {NULL, 0, NULL, 0}};
    const char *run = NULL, *who = NULL, *since = NULL, *limit = NULL, *after = NULL;
    const char *pg = NULL, *cell = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", o, NULL)) != -1) {
        if (c == 'r')
            run = optarg;
        else if (c == 'w')
            who = optarg;
        else if (c == 's')
            since = optarg;
        else if (c == 'l')
            limit = optarg;
        else if (c == 'a')
            after = optarg;
        else if (c == 'p')
            pg = optarg;
        else if (c == 'c')
            cell = optarg;
        else
            return opt_other(c, argv);
    }
    bool verify = optind < argc && strcmp(argv[optind], "verify") == 0;
    if (optind + (verify ? 1 : 0) != argc)
        return bad_usage();
    if (verify) {
        if (run || who || since || limit || after)
            return bad_usage();
        /* PostgreSQL is checked when named, on the command line or by libpq's environment. */
        bool use_pg = pg || getenv("PGHOST") || getenv("PGSERVICE") || getenv("PGDATABASE");
        return audit_verify(pg, cell, use_pg, as_json);
    }
    if (pg || cell)
        return bad_usage();
    return audit_list(run, who, since, limit, after, as_json);
}

static const struct command {
    const char *name;
    int (*fn)(int argc, char **argv, int as_json);
    const char *help;
} commands[] = {
    {"submit", cmd_submit,
     "submit WORKFLOW [--plate P] [--priority P] [--score X] [--deadline T] [--name N]\n"
     "         [--param K=V]... | submit -f FILE\n"
     "         [--await-workflow] (queue it though its workflow is not stored yet)\n"
     "         [--idempotency-key K] [--retries N] [--timeout S] (sent again with the same key\n"
     "         after a timeout or a lost connection; the daemon makes one run of it)"},
    {"runs", cmd_runs, "runs [--state S] [--limit N] [--after CURSOR] [--lab [--cell C]]"},
    {"lab", cmd_lab, "lab (the lab's cells: state, heartbeat, runs held, instruments)"},
    {"run", cmd_run, "run ID"},
    {"plates", cmd_plates,
     "plates [--location at|outside|in_transit|unknown] [--instrument ID] [--limit N]\n"
     "         [--after CURSOR] (where every plate is) | plates BARCODE (where it is, what\n"
     "         went into it, its moves)"},
    {"cancel", cmd_cancel, "cancel ID [--reason TEXT]"},
    {"priority", cmd_priority, "priority RUN [urgent|high|normal|low] [--score X]"},
    {"schedule", cmd_schedule, "schedule (the plan: instrument, run, step, start, end, state)"},
    {"pause", cmd_pause, "pause INSTRUMENT (operator hold)"},
    {"record", cmd_record, "record INSTRUMENT on|off (its wire recording, to the configured file)"},
    {"resume", cmd_resume, "resume INSTRUMENT | resume RUN [--retry|--skip] (a paused run)"},
    {"campaign", cmd_campaign, "campaign create FILE | campaign ID | campaign pause|resume ID"},
    {"batch", cmd_batch, "batch push CAMPAIGN FILE (a candidate batch; the answer as JSON)"},
    {"candidates", cmd_candidates,
     "candidates CAMPAIGN [--state S] (each with its state, plate, score and why)"},
    {"results", cmd_results, "results CAMPAIGN (one row per completed candidate)"},
    {"plan", cmd_plan, "plan FILE [--budget-ms N] [--seed N] (offline planning; no daemon needed)"},
    {"instruments", cmd_instruments, "instruments [ID] (state, telemetry, last error; actions)"},
    {"action", cmd_action,
     "action ID NAME [KEY=VALUE]... [--timeout S] [--plate BARCODE] (manual control; --plate\n"
     "         names the plate it handles for the plate registry)"},
    {"consumables", cmd_consumables,
     "consumables [INSTRUMENT] (a liquid handler's tips and troughs: left, reserved, last use)"},
    {"refill", cmd_refill,
     "refill INSTRUMENT --trough NAME[=UL] | --tips | --racks N [--reason TEXT]\n"
     "         (a trough filled to UL µL or full; every tip rack, or N racks, fresh)"},
    {"watch", cmd_watch,
     "watch [--kind K]... [--after SEQ] [--json] (live events, one per line: SEQ KIND KEY DATA;\n"
     "         reconnects from the last event seen)"},
    {"ports", cmd_ports, "ports (serial ports with USB VID:PID and serial; no daemon needed)"},
    {"audit", cmd_audit,
     "audit [--run ID] [--who NAME] [--since T] [--limit N] [--after CURSOR] (the audit trail)\n"
     "         | audit verify [--pg CONNINFO] [--cell C] (the daemon checks its chain; "
     "PostgreSQL's\n"
     "         labloop.audit is checked here, every hash recomputed, with --pg or PGHOST,\n"
     "         PGSERVICE or PGDATABASE set; exit 1 when anything is wrong)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: labloop [--json] COMMAND ...\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  labloop %s\n", commands[i].help);
    fprintf(out, "environment: LABLOOP_URL (default http://127.0.0.1:8470), LABLOOP_TOKEN\n");
}

int main(int argc, char **argv)
{
    int as_json = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("labloop %s\n", LAB_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(argv[i], commands[k].name) == 0) {
            cmd_name = commands[k].name;
            cmd_usage = commands[k].help;
            opterr = 0; /* opt_other says what was wrong, with the command's usage */
            curl_global_init(CURL_GLOBAL_DEFAULT);
            int rc = commands[k].fn(argc - i, argv + i, as_json);
            curl_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "labloop: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return EXIT_USAGE;
}
