/* The JSON Schema subset: compile checks every keyword and compiles patterns once; validation
 * walks the schema beside the document and collects every problem. */
#include "core/jschema.h"
#include "core/clock.h"
#include "core/embed.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/utf8.h"
#include "core/text.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deeper than any document labloop accepts; stops $ref cycles and hostile nesting. */
#define MAX_DEPTH 64

typedef struct pattern {
    const json_t *node; /* the "pattern" string, or the patternProperties key's schema */
    const char *source;
    regex_t re;
} pattern_t;

struct lab_jschema {
    json_t *root;
    pattern_t *pats;
    int npats, cap;
};

typedef enum {
    K_ANY,
    K_SCHEMA,
    K_SCHEMA_MAP,
    K_SCHEMA_LIST,
    K_NONNEG,
    K_NUMBER,
    K_STRING,
    K_BOOL,
    K_ARRAY,
    K_TYPE,
    K_STRING_LIST
} kind_t;

/* Every keyword the validator knows, with the shape its value must have. */
static const struct keyword {
    const char *name;
    kind_t kind;
} keywords[] = {
    {"type", K_TYPE},
    {"enum", K_ARRAY},
    {"const", K_ANY},
    {"properties", K_SCHEMA_MAP},
    {"patternProperties", K_SCHEMA_MAP},
    {"additionalProperties", K_SCHEMA},
    {"required", K_STRING_LIST},
    {"minProperties", K_NONNEG},
    {"maxProperties", K_NONNEG},
    {"items", K_SCHEMA},
    {"minItems", K_NONNEG},
    {"maxItems", K_NONNEG},
    {"uniqueItems", K_BOOL},
    {"minimum", K_NUMBER},
    {"maximum", K_NUMBER},
    {"exclusiveMinimum", K_NUMBER},
    {"exclusiveMaximum", K_NUMBER},
    {"multipleOf", K_NUMBER},
    {"minLength", K_NONNEG},
    {"maxLength", K_NONNEG},
    {"pattern", K_STRING},
    {"format", K_STRING},
    {"$defs", K_SCHEMA_MAP},
    {"$ref", K_STRING},
    {"oneOf", K_SCHEMA_LIST},
    {"anyOf", K_SCHEMA_LIST},
    {"allOf", K_SCHEMA_LIST},
    {"not", K_SCHEMA},
    /* annotations: accepted, not checked */
    {"title", K_STRING},
    {"description", K_STRING},
    {"$schema", K_STRING},
    {"$id", K_STRING},
    {"$comment", K_STRING},
    {"default", K_ANY},
    {"examples", K_ARRAY},
};

static const char *const type_names[] = {"object", "array",   "string", "integer",
                                         "number", "boolean", "null"};
static const char *const formats[] = {"date-time", "uuid"};

/* ---- errors and pointers ---- */

void lab_jerrs_add(lab_jerrs_t *e, const char *path, const char *fmt, ...)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->v = lab_realloc(e->v, sizeof *e->v * (size_t)e->cap);
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* Messages quote the document; cut to the buffer, one could end mid-character. */
    char valid[sizeof buf];
    lab_utf8_sanitize(valid, sizeof valid, buf, strlen(buf));
    e->v[e->n].path = lab_strdup(path);
    e->v[e->n].message = lab_strdup(valid);
    e->n++;
}

void lab_jerrs_free(lab_jerrs_t *e)
{
    for (int i = 0; i < e->n; i++) {
        free(e->v[i].path);
        free(e->v[i].message);
    }
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
}

json_t *lab_jerrs_to_json(const lab_jerrs_t *e)
{
    json_t *a = json_array();
    for (int i = 0; i < e->n; i++)
        json_array_append_new(
            a, json_pack("{s:s, s:s}", "path", e->v[i].path, "message", e->v[i].message));
    return a;
}

char *lab_jpointer_append(const char *base, const char *token)
{
    size_t bl = strlen(base), extra = 0;
    for (const char *p = token; *p; p++)
        extra += (*p == '~' || *p == '/');
    char *out = lab_malloc(bl + 1 + strlen(token) + extra + 1);
    memcpy(out, base, bl);
    char *w = out + bl;
    *w++ = '/';
    for (const char *p = token; *p; p++) {
        if (*p == '~') {
            *w++ = '~';
            *w++ = '0';
        } else if (*p == '/') {
            *w++ = '~';
            *w++ = '1';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return out;
}

static char *pointer_index(const char *base, size_t i)
{
    return lab_asprintf("%s/%zu", base, i);
}

/* ---- compile ---- */

static const struct keyword *find_keyword(const char *name)
{
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
        if (strcmp(keywords[i].name, name) == 0)
            return &keywords[i];
    return NULL;
}

static bool is_type_name(const char *s)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        if (strcmp(type_names[i], s) == 0)
            return true;
    return false;
}

static int add_pattern(lab_jschema_t *s, const json_t *node, const char *source, char *err,
                       size_t errlen, const char *where)
{
    if (s->npats == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->pats = lab_realloc(s->pats, sizeof *s->pats * (size_t)s->cap);
    }
    pattern_t *p = &s->pats[s->npats];
    int rc = regcomp(&p->re, source, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &p->re, msg, sizeof msg);
        snprintf(err, errlen, "%s: pattern '%s' is not a POSIX extended regular expression: %s",
                 where, source, msg);
        return LAB_EINVAL;
    }
    p->node = node;
    p->source = source;
    s->npats++;
    return 0;
}

static const regex_t *find_pattern(const lab_jschema_t *s, const json_t *node, const char *source)
{
    for (int i = 0; i < s->npats; i++)
        if (s->pats[i].node == node && strcmp(s->pats[i].source, source) == 0)
            return &s->pats[i].re;
    return NULL;
}

static const json_t *resolve_ref(const lab_jschema_t *s, const char *ref)
{
    static const char prefix[] = "#/$defs/";
    if (strncmp(ref, prefix, sizeof prefix - 1) != 0)
        return NULL;
    return json_object_get(json_object_get(s->root, "$defs"), ref + sizeof prefix - 1);
}

static int check_schema(lab_jschema_t *s, const json_t *node, const char *where, int depth,
                        char *err, size_t errlen);

static int check_value(lab_jschema_t *s, const json_t *schema, const struct keyword *k,
                       const json_t *v, const char *where, int depth, char *err, size_t errlen)
{
    const char *key;
    json_t *sub;
    size_t i;
    char *w;
    int rc = 0;
    switch (k->kind) {
    case K_ANY:
        return 0;
    case K_SCHEMA:
        w = lab_asprintf("%s/%s", where, k->name);
        rc = check_schema(s, v, w, depth + 1, err, errlen);
        free(w);
        return rc;
    case K_SCHEMA_MAP:
        if (!json_is_object(v))
            break;
        json_object_foreach((json_t *)v, key, sub)
        {
            w = lab_asprintf("%s/%s/%s", where, k->name, key);
            rc = check_schema(s, sub, w, depth + 1, err, errlen);
            if (rc == 0 && strcmp(k->name, "patternProperties") == 0)
                rc = add_pattern(s, sub, key, err, errlen, w);
            free(w);
            if (rc)
                return rc;
        }
        return 0;
    case K_SCHEMA_LIST:
        if (!json_is_array(v) || json_array_size(v) == 0)
            break;
        json_array_foreach(v, i, sub)
        {
            w = lab_asprintf("%s/%s/%zu", where, k->name, i);
            rc = check_schema(s, sub, w, depth + 1, err, errlen);
            free(w);
            if (rc)
                return rc;
        }
        return 0;
    case K_NONNEG:
        if (json_is_integer(v) && json_integer_value(v) >= 0)
            return 0;
        break;
    case K_NUMBER:
        if (!json_is_number(v))
            break;
        if (strcmp(k->name, "multipleOf") == 0 && json_number_value(v) <= 0)
            break;
        return 0;
    case K_STRING:
        if (!json_is_string(v))
            break;
        if (strcmp(k->name, "pattern") == 0)
            return add_pattern(s, schema, json_string_value(v), err, errlen, where);
        if (strcmp(k->name, "$ref") == 0 && !resolve_ref(s, json_string_value(v))) {
            snprintf(err, errlen, "%s: $ref '%s' does not name an entry of #/$defs", where,
                     json_string_value(v));
            return LAB_EINVAL;
        }
        if (strcmp(k->name, "format") == 0) {
            for (i = 0; i < sizeof formats / sizeof formats[0]; i++)
                if (strcmp(formats[i], json_string_value(v)) == 0)
                    return 0;
            snprintf(err, errlen, "%s: format '%s' is not supported (date-time, uuid)", where,
                     json_string_value(v));
            return LAB_EINVAL;
        }
        return 0;
    case K_BOOL:
        if (json_is_boolean(v))
            return 0;
        break;
    case K_ARRAY:
        if (json_is_array(v))
            return 0;
        break;
    case K_TYPE:
        if (json_is_string(v) && is_type_name(json_string_value(v)))
            return 0;
        if (json_is_array(v) && json_array_size(v) > 0) {
            json_array_foreach(v, i, sub) if (!json_is_string(sub) ||
                                              !is_type_name(json_string_value(sub))) goto bad;
            return 0;
        }
        break;
    case K_STRING_LIST:
        if (!json_is_array(v))
            break;
        json_array_foreach(v, i, sub) if (!json_is_string(sub)) goto bad;
        return 0;
    }
bad:
    snprintf(err, errlen, "%s: the value of '%s' has the wrong form", where, k->name);
    return LAB_EINVAL;
}

static int check_schema(lab_jschema_t *s, const json_t *node, const char *where, int depth,
                        char *err, size_t errlen)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "%s: schema nested too deeply", where);
        return LAB_EINVAL;
    }
    if (json_is_boolean(node))
        return 0;
    if (!json_is_object(node)) {
        snprintf(err, errlen, "%s: a schema must be an object or a boolean", where);
        return LAB_EINVAL;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)node, key, v)
    {
        const struct keyword *k = find_keyword(key);
        if (!k) {
            snprintf(err, errlen, "%s: keyword '%s' is not supported", where, key);
            return LAB_EINVAL;
        }
        if (check_value(s, node, k, v, where, depth, err, errlen))
            return LAB_EINVAL;
    }
    return 0;
}

lab_jschema_t *lab_jschema_compile(const char *schema_text, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loads(schema_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "not JSON: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    lab_jschema_t *s = LAB_NEW(lab_jschema_t);
    s->root = root;
    if (check_schema(s, root, "#", 0, err, errlen)) {
        lab_jschema_free(s);
        return NULL;
    }
    return s;
}

void lab_jschema_free(lab_jschema_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->npats; i++)
        regfree(&s->pats[i].re);
    free(s->pats);
    json_decref(s->root);
    free(s);
}

lab_jschema_t *lab_jschema_get(const char *name)
{
    /* A handful of schemas, compiled once; kept for the life of the process. */
    static struct {
        char *name;
        lab_jschema_t *s;
    } cache[16];
    static int n;
    for (int i = 0; i < n; i++)
        if (strcmp(cache[i].name, name) == 0)
            return cache[i].s;
    char *full = lab_asprintf("json/%s", name);
    const lab_embedded_t *e = lab_embedded_find(full);
    free(full);
    if (!e) {
        log_error("jschema", "no embedded schema json/%s", name);
        return NULL;
    }
    char err[256];
    lab_jschema_t *s = lab_jschema_compile(e->text, err, sizeof err);
    if (!s) {
        log_error("jschema", "schema %s: %s", name, err);
        return NULL;
    }
    if (n < (int)(sizeof cache / sizeof cache[0])) {
        cache[n].name = lab_strdup(name);
        cache[n].s = s;
        n++;
    }
    return s;
}

/* ---- validate ---- */

static bool is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return true;
    double d = json_number_value(v);
    return json_is_real(v) && isfinite(d) && d == floor(d);
}

static const char *instance_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static bool type_matches(const char *t, const json_t *v)
{
    if (strcmp(t, "integer") == 0)
        return json_is_number(v) && is_integral(v);
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    if (strcmp(t, "boolean") == 0)
        return json_is_boolean(v);
    return strcmp(t, instance_type(v)) == 0;
}

static void join_strings(const json_t *arr, char *out, size_t len)
{
    size_t i, used = 0;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(arr, i, v)
    {
        char *t = json_is_string(v) ? lab_strdup(json_string_value(v))
                                    : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        int w = snprintf(out + used, len - used, "%s%s", i ? ", " : "", t ? t : "?");
        free(t);
        if (w < 0 || (size_t)w >= len - used) {
            snprintf(out + len - 4, 4, "...");
            return;
        }
        used += (size_t)w;
    }
}

static int validate(const lab_jschema_t *s, const json_t *schema, const json_t *v, const char *ptr,
                    int depth, lab_jerrs_t *errs);

static void validate_number(const json_t *schema, const json_t *v, const char *ptr,
                            lab_jerrs_t *errs)
{
    double d = json_number_value(v);
    json_t *k;
    if ((k = json_object_get(schema, "minimum")) && d < json_number_value(k))
        lab_jerrs_add(errs, ptr, "must be >= %g", json_number_value(k));
    if ((k = json_object_get(schema, "maximum")) && d > json_number_value(k))
        lab_jerrs_add(errs, ptr, "must be <= %g", json_number_value(k));
    if ((k = json_object_get(schema, "exclusiveMinimum")) && d <= json_number_value(k))
        lab_jerrs_add(errs, ptr, "must be > %g", json_number_value(k));
    if ((k = json_object_get(schema, "exclusiveMaximum")) && d >= json_number_value(k))
        lab_jerrs_add(errs, ptr, "must be < %g", json_number_value(k));
    if ((k = json_object_get(schema, "multipleOf"))) {
        double q = d / json_number_value(k);
        if (fabs(q - round(q)) > 1e-9)
            lab_jerrs_add(errs, ptr, "must be a multiple of %g", json_number_value(k));
    }
}

static void validate_string(const lab_jschema_t *s, const json_t *schema, const json_t *v,
                            const char *ptr, lab_jerrs_t *errs)
{
    const char *str = json_string_value(v);
    size_t bytes = json_string_length(v);
    json_t *k;
    /* jansson refuses such text when it parses, but a document can be built in other ways */
    if (!lab_text_valid(str, bytes)) {
        lab_jerrs_add(errs, ptr, "is not valid UTF-8 text");
        return;
    }
    size_t len = lab_text_chars(str, bytes); /* maxLength counts characters, not bytes */
    if ((k = json_object_get(schema, "minLength")) && len < (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must be at least %lld characters long",
                      (long long)json_integer_value(k));
    if ((k = json_object_get(schema, "maxLength")) && len > (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must be at most %lld characters long",
                      (long long)json_integer_value(k));
    if ((k = json_object_get(schema, "pattern"))) {
        const regex_t *re = find_pattern(s, schema, json_string_value(k));
        if (re && regexec(re, str, 0, NULL, 0) != 0)
            lab_jerrs_add(errs, ptr, "does not match the pattern %s", json_string_value(k));
    }
    if ((k = json_object_get(schema, "format"))) {
        const char *f = json_string_value(k);
        int64_t ms;
        if (strcmp(f, "date-time") == 0 && lab_time_parse(str, &ms) != 0)
            lab_jerrs_add(errs, ptr, "not a date-time (RFC 3339, e.g. 2026-11-22T10:00:00Z)");
        else if (strcmp(f, "uuid") == 0 && !lab_uuid_valid(str))
            lab_jerrs_add(errs, ptr, "not a UUID");
    }
}

static void validate_array(const lab_jschema_t *s, const json_t *schema, const json_t *v,
                           const char *ptr, int depth, lab_jerrs_t *errs)
{
    size_t n = json_array_size(v), i, j;
    json_t *k, *item;
    if ((k = json_object_get(schema, "minItems")) && n < (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must have at least %lld items", (long long)json_integer_value(k));
    if ((k = json_object_get(schema, "maxItems")) && n > (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must have at most %lld items", (long long)json_integer_value(k));
    if (json_is_true(json_object_get(schema, "uniqueItems"))) {
        for (i = 0; i < n; i++)
            for (j = i + 1; j < n; j++)
                if (json_equal(json_array_get(v, i), json_array_get(v, j))) {
                    char *p = pointer_index(ptr, j);
                    lab_jerrs_add(errs, p, "repeats item %zu (items must be unique)", i);
                    free(p);
                    i = j = n;
                }
    }
    const json_t *items = json_object_get(schema, "items");
    if (items) {
        json_array_foreach(v, i, item)
        {
            char *p = pointer_index(ptr, i);
            validate(s, items, item, p, depth + 1, errs);
            free(p);
        }
    }
}

static void validate_object(const lab_jschema_t *s, const json_t *schema, const json_t *v,
                            const char *ptr, int depth, lab_jerrs_t *errs)
{
    json_t *k, *props = json_object_get(schema, "properties");
    json_t *pprops = json_object_get(schema, "patternProperties");
    json_t *additional = json_object_get(schema, "additionalProperties");
    size_t n = json_object_size(v), i;
    if ((k = json_object_get(schema, "minProperties")) && n < (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must have at least %lld fields",
                      (long long)json_integer_value(k));
    if ((k = json_object_get(schema, "maxProperties")) && n > (size_t)json_integer_value(k))
        lab_jerrs_add(errs, ptr, "must have at most %lld fields", (long long)json_integer_value(k));
    json_t *name;
    json_array_foreach(json_object_get(schema, "required"), i, name)
    {
        if (!json_object_get(v, json_string_value(name))) {
            char *p = lab_jpointer_append(ptr, json_string_value(name));
            lab_jerrs_add(errs, p, "required field missing");
            free(p);
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        char *p = lab_jpointer_append(ptr, key);
        bool matched = false;
        json_t *sub = json_object_get(props, key);
        if (sub) {
            matched = true;
            validate(s, sub, val, p, depth + 1, errs);
        }
        const char *pat;
        json_t *psub;
        json_object_foreach(pprops, pat, psub)
        {
            const regex_t *re = find_pattern(s, psub, pat);
            if (re && regexec(re, key, 0, NULL, 0) == 0) {
                matched = true;
                validate(s, psub, val, p, depth + 1, errs);
            }
        }
        if (!matched && additional) {
            if (json_is_false(additional))
                lab_jerrs_add(errs, p, "unknown field");
            else
                validate(s, additional, val, p, depth + 1, errs);
        }
        free(p);
    }
}

/* How many of the schemas in list v matches, collecting the first failing branch's errors. */
/* A form whose "type" admits the value (or that names no type). */
static bool form_admits(const json_t *form, const json_t *v)
{
    const json_t *t = json_object_get(form, "type");
    if (!t)
        return true;
    if (json_is_string(t))
        return type_matches(json_string_value(t), v);
    size_t i;
    json_t *one;
    json_array_foreach(t, i, one) if (type_matches(json_string_value(one), v)) return true;
    return false;
}

/* How many forms of list v matches. When it matches none and exactly one form is of v's type,
 * that form's problems go into why (they name the entry at fault: "/volume_ul/2", not just
 * "/volume_ul"); otherwise why stays empty. */
static int count_matches(const lab_jschema_t *s, const json_t *list, const json_t *v,
                         const char *ptr, int depth, lab_jerrs_t *why)
{
    int ok = 0, admitted = 0;
    size_t i;
    json_t *sub;
    lab_jerrs_t kept = {0};
    json_array_foreach(list, i, sub)
    {
        lab_jerrs_t tmp = {0};
        if (validate(s, sub, v, ptr, depth + 1, &tmp) == 0)
            ok++;
        if (form_admits(sub, v) && admitted++ == 0)
            kept = tmp;
        else
            lab_jerrs_free(&tmp);
    }
    if (ok == 0 && admitted == 1 && why) {
        for (int k = 0; k < kept.n; k++)
            lab_jerrs_add(why, kept.v[k].path, "%s", kept.v[k].message);
    }
    lab_jerrs_free(&kept);
    return ok;
}

/* anyOf/oneOf matching none of its forms. */
static void none_matched(lab_jerrs_t *errs, lab_jerrs_t *why, const char *ptr, size_t forms)
{
    if (why->n == 0)
        lab_jerrs_add(errs, ptr, "matches none of the %zu allowed forms", forms);
    for (int k = 0; k < why->n; k++)
        lab_jerrs_add(errs, why->v[k].path, "%s", why->v[k].message);
}

static int validate(const lab_jschema_t *s, const json_t *schema, const json_t *v, const char *ptr,
                    int depth, lab_jerrs_t *errs)
{
    int before = errs->n;
    if (depth > MAX_DEPTH) {
        lab_jerrs_add(errs, ptr, "nested too deeply");
        return 1;
    }
    if (json_is_true(schema))
        return 0;
    if (json_is_false(schema)) {
        lab_jerrs_add(errs, ptr, "not allowed");
        return 1;
    }
    json_t *k;
    if ((k = json_object_get(schema, "$ref"))) {
        const json_t *target = resolve_ref(s, json_string_value(k));
        if (target)
            validate(s, target, v, ptr, depth + 1, errs);
    }
    if ((k = json_object_get(schema, "type"))) {
        bool ok = false;
        char expected[128];
        if (json_is_string(k)) {
            ok = type_matches(json_string_value(k), v);
            snprintf(expected, sizeof expected, "%s", json_string_value(k));
        } else {
            size_t i;
            json_t *t;
            json_array_foreach(k, i, t) ok = ok || type_matches(json_string_value(t), v);
            join_strings(k, expected, sizeof expected);
        }
        if (!ok) {
            /* Nothing else about a value of the wrong type is worth saying. */
            lab_jerrs_add(errs, ptr, "expected %s, got %s", expected, instance_type(v));
            return errs->n - before;
        }
    }
    if ((k = json_object_get(schema, "enum"))) {
        bool found = false;
        size_t i;
        json_t *e;
        json_array_foreach(k, i, e) found = found || json_equal(e, (json_t *)v);
        if (!found) {
            char list[256];
            join_strings(k, list, sizeof list);
            lab_jerrs_add(errs, ptr, "must be one of %s", list);
        }
    }
    if ((k = json_object_get(schema, "const")) && !json_equal(k, (json_t *)v)) {
        char *t = json_dumps(k, JSON_ENCODE_ANY | JSON_COMPACT);
        lab_jerrs_add(errs, ptr, "must be %s", t ? t : "?");
        free(t);
    }
    if (json_is_number(v))
        validate_number(schema, v, ptr, errs);
    else if (json_is_string(v))
        validate_string(s, schema, v, ptr, errs);
    else if (json_is_array(v))
        validate_array(s, schema, v, ptr, depth, errs);
    else if (json_is_object(v))
        validate_object(s, schema, v, ptr, depth, errs);
    if ((k = json_object_get(schema, "allOf"))) {
        size_t i;
        json_t *sub;
        json_array_foreach(k, i, sub) validate(s, sub, v, ptr, depth + 1, errs);
    }
    if ((k = json_object_get(schema, "anyOf"))) {
        lab_jerrs_t why = {0};
        if (count_matches(s, k, v, ptr, depth, &why) == 0)
            none_matched(errs, &why, ptr, json_array_size(k));
        lab_jerrs_free(&why);
    }
    if ((k = json_object_get(schema, "oneOf"))) {
        lab_jerrs_t why = {0};
        int m = count_matches(s, k, v, ptr, depth, &why);
        if (m == 0)
            none_matched(errs, &why, ptr, json_array_size(k));
        lab_jerrs_free(&why);
        if (m > 1)
            lab_jerrs_add(errs, ptr, "matches %d of the allowed forms; exactly one must match", m);
    }
    if ((k = json_object_get(schema, "not"))) {
        lab_jerrs_t tmp = {0};
        if (validate(s, k, v, ptr, depth + 1, &tmp) == 0)
            lab_jerrs_add(errs, ptr, "matches a form that is not allowed");
        lab_jerrs_free(&tmp);
    }
    return errs->n - before;
}

int lab_jschema_validate(const lab_jschema_t *s, const json_t *instance, lab_jerrs_t *errs)
{
    return validate(s, s->root, instance, "", 0, errs);
}
