/* deploy/grafana/labloop.json names only metrics labloopd exports: every metric name in the
 * dashboard's PromQL (panel targets and template variable queries) must be a series name of a
 * daemon's /metrics, the daemon run with PostgreSQL, MQTT, the lab's shared queue and an
 * instrument so every family is printed. A histogram's or summary's NAME_bucket/_sum/_count
 * (Prometheus exposition format, "Histograms and summaries") count as its NAME's series. */
#include "tests/harness/harness.h"

#include <ctype.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

typedef struct names {
    char **v;
    int n;
} names_t;

static bool names_has(const names_t *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->v[i], name) == 0)
            return true;
    return false;
}

static void names_add(names_t *s, const char *name, size_t len)
{
    char *c = strndup(name, len);
    if (names_has(s, c)) {
        free(c);
        return;
    }
    s->v = realloc(s->v, sizeof *s->v * (size_t)(s->n + 1));
    s->v[s->n++] = c;
}

static void names_free(names_t *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static bool ident_start(char c)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':';
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == ':';
}

/* Past the bracketed group at p (open is *p), strings inside it skipped. */
static const char *skip_group(const char *p, char open, char close)
{
    int depth = 0;
    for (; *p; p++) {
        if (*p == '"' || *p == '\'' || *p == '`') {
            char q = *p;
            for (p++; *p && *p != q; p++)
                if (*p == '\\' && q != '`' && p[1])
                    p++;
            if (!*p)
                return p;
        } else if (*p == open) {
            depth++;
        } else if (*p == close && --depth == 0) {
            return p + 1;
        }
    }
    return p;
}

/* Words of PromQL that are not metric names when not followed by '(' (a call): binary and
 * grouping keywords, and the aggregation operators, which may be followed by by/without before
 * their parenthesis ("max by (x) (m)"). */
static bool promql_keyword(const char *w, size_t n)
{
    static const char *const kw[] = {
        "by",    "without",  "on",     "ignoring",   "group_left",   "group_right",
        "bool",  "offset",   "and",    "or",         "unless",       "atan2",
        "inf",   "nan",      "sum",    "min",        "max",          "avg",
        "group", "stddev",   "stdvar", "count",      "count_values", "bottomk",
        "topk",  "quantile", "limitk", "limit_ratio"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
        if (strlen(kw[i]) == n && strncasecmp(kw[i], w, n) == 0)
            return true;
    return false;
}

/* The metric names one PromQL expression selects: identifiers outside label matchers ({...}),
 * ranges ([...]) and strings that are neither a call, a keyword, a label list after
 * by/without/on/ignoring/group_left/group_right, a number nor a Grafana $variable. */
static void promql_names(const char *q, names_t *out)
{
    const char *p = q;
    while (*p) {
        if (*p == '{') {
            p = skip_group(p, '{', '}');
        } else if (*p == '[') {
            p = skip_group(p, '[', ']');
        } else if (*p == '"' || *p == '\'' || *p == '`') {
            char c = *p;
            for (p++; *p && *p != c; p++)
                if (*p == '\\' && c != '`' && p[1])
                    p++;
            if (*p)
                p++;
        } else if (*p == '$') { /* $var, ${var}, $__rate_interval */
            p++;
            if (*p == '{')
                p = skip_group(p, '{', '}');
            else
                while (ident_char(*p))
                    p++;
        } else if (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) {
            while (isalnum((unsigned char)*p) || *p == '.' || *p == '_' ||
                   ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E')))
                p++; /* 0.5, 1e-3, 0x1f, 5m30s */
        } else if (ident_start(*p)) {
            const char *w = p;
            while (ident_char(*p))
                p++;
            size_t n = (size_t)(p - w);
            const char *after = p;
            while (isspace((unsigned char)*after))
                after++;
            bool grouping = (n == 2 && strncmp(w, "by", 2) == 0) ||
                            (n == 7 && strncmp(w, "without", 7) == 0) ||
                            (n == 2 && strncmp(w, "on", 2) == 0) ||
                            (n == 8 && strncmp(w, "ignoring", 8) == 0) ||
                            (n == 10 && strncmp(w, "group_left", 10) == 0) ||
                            (n == 11 && strncmp(w, "group_right", 11) == 0);
            if (*after == '(' && grouping)
                p = skip_group(after, '(', ')'); /* a list of labels */
            else if (*after == '(' || promql_keyword(w, n))
                ; /* a function's name, or a keyword */
            else
                names_add(out, w, n);
        } else {
            p++;
        }
    }
}

/* A template variable's query: label_values(SELECTOR, label) names the selector's metric;
 * label_values(label) none; query_result(EXPR) and metrics(REGEX) as their argument says. */
static void variable_names(const char *q, names_t *out)
{
    const char *lv = strstr(q, "label_values(");
    if (!lv) {
        const char *qr = strstr(q, "query_result(");
        promql_names(qr ? qr + strlen("query_result") : q, out);
        return;
    }
    const char *arg = lv + strlen("label_values(");
    const char *end = skip_group(lv + strlen("label_values"), '(', ')') - 1;
    /* the last top-level comma separates the selector from the label */
    const char *comma = NULL;
    for (const char *p = arg; p < end;) {
        if (*p == '{')
            p = skip_group(p, '{', '}');
        else if (*p == '(')
            p = skip_group(p, '(', ')');
        else {
            if (*p == ',')
                comma = p;
            p++;
        }
    }
    if (comma) {
        char *sel = strndup(arg, (size_t)(comma - arg));
        promql_names(sel, out);
        free(sel);
    }
}

static void dashboard_names(json_t *v, names_t *out, int *exprs)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (strcmp(k, "expr") == 0 && json_is_string(x)) {
                promql_names(json_string_value(x), out);
                (*exprs)++;
            } else {
                dashboard_names(x, out, exprs);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) dashboard_names(x, out, exprs);
    }
}

static void templating_names(json_t *dash, names_t *out, int *queries)
{
    size_t i;
    json_t *var;
    json_array_foreach(json_object_get(json_object_get(dash, "templating"), "list"), i, var)
    {
        if (strcmp(json_string_value(json_object_get(var, "type")) ?: "", "query") != 0)
            continue;
        json_t *q = json_object_get(var, "query");
        const char *text = json_is_string(q) ? json_string_value(q)
                                             : json_string_value(json_object_get(q, "query"));
        assert_non_null(text);
        variable_names(text, out);
        (*queries)++;
    }
}

/* The series names of an exposition, and each histogram's and summary's family names. */
typedef struct exposition {
    names_t series, histograms;
} exposition_t;

static void exposition_read(const char *text, exposition_t *e)
{
    memset(e, 0, sizeof *e);
    for (const char *l = text; *l;) {
        const char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        if (strncmp(l, "# TYPE ", 7) == 0) {
            const char *name = l + 7, *sp = memchr(name, ' ', len - 7);
            if (sp && (strncmp(sp + 1, "histogram", 9) == 0 || strncmp(sp + 1, "summary", 7) == 0))
                names_add(&e->histograms, name, (size_t)(sp - name));
        } else if (len && l[0] != '#') {
            size_t n = 0;
            while (n < len && ident_char(l[n]))
                n++;
            names_add(&e->series, l, n);
        }
        l += len + (nl != NULL);
    }
}

static bool exported(const exposition_t *e, const char *name)
{
    if (names_has(&e->series, name))
        return true;
    static const char *const suffix[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(name), s = strlen(suffix[i]);
        if (n > s && strcmp(name + n - s, suffix[i]) == 0) {
            char *base = strndup(name, n - s);
            bool ok = names_has(&e->histograms, base);
            free(base);
            if (ok)
                return true;
        }
    }
    return false;
}

static void exposition_free(exposition_t *e)
{
    names_free(&e->series);
    names_free(&e->histograms);
}

/* The extraction itself, on expressions whose names are known. */
static void test_promql_extraction(void **state)
{
    (void)state;
    static const struct {
        const char *q, *want; /* want: the names, space-separated, in order of appearance */
    } cases[] = {
        {"labloop_a", "labloop_a"},
        {"sum by (instrument, state) (rate(labloop_b_total{instrument=~\"$instrument\","
         "state!=\"by\"}[$__rate_interval]))",
         "labloop_b_total"},
        {"histogram_quantile(0.99, sum without (instance) (rate(x_seconds_bucket[5m])))",
         "x_seconds_bucket"},
        {"a / on(instance) group_left(cell) b offset 1h30m > bool 1e-3 unless c", "a b c"},
        {"max(up{job='x'}) or vector(0) and inf > nan", "up"},
        {"2 * max by (i) (m{s=\"idle\"})\n+ 3 * max by (i) (m{s=\"busy\"})", "m"},
        {"count(${metric:raw}) + sum(y) by (z)", "y"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        names_t got = {0};
        promql_names(cases[i].q, &got);
        char joined[256] = "";
        for (int k = 0; k < got.n; k++)
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", k ? " " : "",
                     got.v[k]);
        if (strcmp(joined, cases[i].want) != 0)
            fail_msg("%s: got '%s', want '%s'", cases[i].q, joined, cases[i].want);
        names_free(&got);
    }
    names_t got = {0};
    variable_names("label_values(labloop_i{job=~\"$job\", a=\",\"}, instrument)", &got);
    variable_names("label_values(job)", &got);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.v[0], "labloop_i");
    names_free(&got);

    exposition_t e;
    exposition_read("# HELP h_seconds x\n# TYPE h_seconds histogram\n"
                    "h_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 2\nh_seconds_count 1\n"
                    "# TYPE g gauge\ng{a=\"b\"} 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\n"
                    "s_count 3\n",
                    &e);
    assert_true(exported(&e, "h_seconds_bucket"));
    assert_true(exported(&e, "h_seconds_count"));
    assert_true(exported(&e, "g"));
    assert_true(exported(&e, "s"));
    assert_true(exported(&e, "s_sum"));      /* a summary's _sum, printed or not */
    assert_false(exported(&e, "h_seconds")); /* a histogram has no series of its own name */
    assert_false(exported(&e, "g_count"));
    assert_false(exported(&e, "missing_total"));
    exposition_free(&e);
}

static void test_dashboard_metrics_exported(void **state)
{
    (void)state;
    json_error_t je;
    json_t *dash = json_load_file(LAB_SOURCE_DIR_T "/deploy/grafana/labloop.json", 0, &je);
    if (!dash)
        fail_msg("deploy/grafana/labloop.json: line %d: %s", je.line, je.text);
    names_t used = {0};
    int exprs = 0, queries = 0;
    dashboard_names(json_object_get(dash, "panels"), &used, &exprs);
    templating_names(dash, &used, &queries);
    json_decref(dash);
    assert_true(exprs > 0);
    assert_true(queries > 0);
    printf("dashboard: %d expressions and %d variable queries name %d metrics\n", exprs, queries,
           used.n);

    h_pg_t pg;
    h_mqtt_t mq;
    h_daemon_t d;
    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_daemon_start(&d, &pg, &mq,
                                    "[lab]\nshared_queue = on\n"
                                    "[instrument mover1]\ndriver = manual-mover\n"),
                     0);
    char *text = NULL;
    assert_int_equal(h_http(d.url, "GET", "/metrics", NULL, NULL, &text), 200);
    assert_non_null(text);
    exposition_t e;
    exposition_read(text, &e);
    free(text);
    int missing = 0;
    for (int i = 0; i < used.n; i++)
        if (!exported(&e, used.v[i])) {
            fprintf(stderr, "deploy/grafana/labloop.json names %s; /metrics has no such series\n",
                    used.v[i]);
            missing++;
        }
    /* the other way round is no failure: a metric may be worth exporting and not plotting */
    for (int i = 0; i < e.series.n; i++)
        if (!names_has(&used, e.series.v[i]))
            printf("not on the dashboard: %s\n", e.series.v[i]);
    assert_int_equal(missing, 0);
    exposition_free(&e);
    names_free(&used);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_promql_extraction),
        cmocka_unit_test(test_dashboard_metrics_exported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
