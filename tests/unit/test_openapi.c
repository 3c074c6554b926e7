/* The OpenAPI document against the route table (daemon/api/routes.c), the one truth for paths,
 * methods and roles: every route is documented with the same roles (x-roles, the description,
 * no security where no token is needed), every documented operation has a route, each {name} of
 * a path is a path parameter, a route that takes a body documents it and its 400/413/415/422, a
 * route behind a token its 401 (and 403 unless every role may), and every $ref of the served
 * document resolves inside it. Every problem is named at once. */
#include "daemon/api/api_int.h"
#include "core/embed.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const lab_role_t roles[] = {LAB_ROLE_VIEWER, LAB_ROLE_TECHNICIAN, LAB_ROLE_PIPELINE,
                                   LAB_ROLE_ADMIN};

typedef struct problems {
    char text[16384];
    size_t len;
    int n;
} problems_t;

static void __attribute__((format(printf, 2, 3))) bad(problems_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (p->len < sizeof p->text) {
        int w = vsnprintf(p->text + p->len, sizeof p->text - p->len, fmt, ap);
        p->len += w > 0 ? (size_t)w : 0;
        if (p->len < sizeof p->text)
            p->text[p->len++] = '\n';
    }
    va_end(ap);
    p->n++;
}

static void report(const problems_t *p)
{
    if (p->n)
        fail_msg("%d problem(s):\n%.*s", p->n,
                 (int)(p->len < sizeof p->text ? p->len : sizeof p->text), p->text);
}

static int route_of(const char *method, const char *path)
{
    for (int i = 0; i < lab_nroutes; i++)
        if (strcasecmp(lab_routes[i].method, method) == 0 &&
            strcmp(lab_routes[i].pattern, path) == 0)
            return i;
    return -1;
}

static json_t *operation(json_t *doc, const char *method, const char *path)
{
    char m[8];
    size_t i = 0;
    for (; method[i] && i < sizeof m - 1; i++)
        m[i] = (char)(method[i] | 0x20); /* GET -> get */
    m[i] = 0;
    return json_object_get(json_object_get(json_object_get(doc, "paths"), path), m);
}

static bool has_response(json_t *op, const char *status)
{
    return json_object_get(json_object_get(op, "responses"), status) != NULL;
}

/* The roles of x-roles as bits; -1 when it is not an array of role names. */
static int xroles_bits(json_t *op)
{
    json_t *a = json_object_get(op, "x-roles"), *v;
    size_t i;
    if (!json_is_array(a))
        return -1;
    int bits = 0;
    json_array_foreach(a, i, v)
    {
        int r = json_is_string(v) ? lab_role_parse(json_string_value(v)) : -1;
        if (r < 0)
            return -1;
        bits |= r;
    }
    return bits;
}

/* "Roles: viewer, technician." in the order of roles[], or "No token needed." */
static void roles_sentence(unsigned bits, char *out, size_t cap)
{
    if (!bits) {
        snprintf(out, cap, "No token needed.");
        return;
    }
    size_t len = (size_t)snprintf(out, cap, "Roles:");
    for (size_t i = 0; i < sizeof roles / sizeof *roles && len < cap; i++)
        if (bits & (unsigned)roles[i])
            len += (size_t)snprintf(out + len, cap - len, "%s %s", len > 6 ? "," : "",
                                    lab_role_name(roles[i]));
    if (len < cap)
        snprintf(out + len, cap - len, ".");
}

static void check_route(problems_t *p, json_t *doc, const lab_route_t *r)
{
    json_t *op = operation(doc, r->method, r->pattern);
    if (!op) {
        bad(p, "%s %s: in the route table, not in the document", r->method, r->pattern);
        return;
    }
    int bits = xroles_bits(op);
    if (bits != (int)r->roles)
        bad(p, "%s %s: x-roles is not the route's roles (%#x in the table, %#x documented)",
            r->method, r->pattern, r->roles, (unsigned)bits);
    char sentence[128];
    roles_sentence(r->roles, sentence, sizeof sentence);
    const char *desc = json_string_value(json_object_get(op, "description"));
    if (!desc || !strstr(desc, sentence))
        bad(p, "%s %s: the description does not say \"%s\"", r->method, r->pattern, sentence);
    json_t *sec = json_object_get(op, "security");
    if (!r->roles && !(json_is_array(sec) && json_array_size(sec) == 0))
        bad(p, "%s %s: needs no token, but its security is not []", r->method, r->pattern);
    if (r->roles && sec)
        bad(p, "%s %s: needs a token, but overrides security", r->method, r->pattern);
    if (r->roles && !has_response(op, "401"))
        bad(p, "%s %s: needs a token, 401 is not documented", r->method, r->pattern);
    if (r->roles && r->roles != LAB_ROLES_ALL && !has_response(op, "403"))
        bad(p, "%s %s: not every role may, 403 is not documented", r->method, r->pattern);
    if (r->body) {
        if (!json_object_get(json_object_get(json_object_get(op, "requestBody"), "content"),
                             "application/json"))
            bad(p, "%s %s: takes a JSON body, none is documented", r->method, r->pattern);
        static const char *const body_errors[] = {"400", "413", "415", "422"};
        for (size_t i = 0; i < sizeof body_errors / sizeof *body_errors; i++)
            if (!has_response(op, body_errors[i]))
                bad(p, "%s %s: takes a body, %s is not documented", r->method, r->pattern,
                    body_errors[i]);
    }
}

/* Each {name} of the path is a path parameter of the operation, and each path parameter is a
 * {name} of the path. */
static void check_params(problems_t *p, const char *method, const char *path, json_t *op)
{
    int in_path = 0, documented = 0;
    for (const char *s = strchr(path, '{'); s; s = strchr(s + 1, '{')) {
        const char *e = strchr(s, '}');
        if (!e)
            break;
        in_path++;
        bool found = false;
        json_t *prm;
        size_t i;
        json_array_foreach(json_object_get(op, "parameters"), i, prm)
        {
            const char *name = json_string_value(json_object_get(prm, "name"));
            const char *where = json_string_value(json_object_get(prm, "in"));
            if (name && where && strcmp(where, "path") == 0 &&
                strlen(name) == (size_t)(e - s - 1) && strncmp(name, s + 1, strlen(name)) == 0)
                found = json_is_true(json_object_get(prm, "required"));
        }
        if (!found)
            bad(p, "%s %s: {%.*s} is not a required path parameter", method, path, (int)(e - s - 1),
                s + 1);
    }
    json_t *prm;
    size_t i;
    json_array_foreach(json_object_get(op, "parameters"), i, prm)
    {
        const char *where = json_string_value(json_object_get(prm, "in"));
        documented += where && strcmp(where, "path") == 0;
    }
    if (documented != in_path)
        bad(p, "%s %s: %d path parameters documented, the path has %d", method, path, documented,
            in_path);
}

static void test_routes_match_the_document(void **state)
{
    (void)state;
    problems_t p = {0};
    json_t *doc = lab_api_openapi_doc();
    assert_non_null(doc);
    for (int i = 0; i < lab_nroutes; i++)
        check_route(&p, doc, &lab_routes[i]);

    const char *path, *method;
    json_t *item, *op;
    int ops = 0;
    json_object_foreach(json_object_get(doc, "paths"), path, item)
    {
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "parameters") == 0 || strcmp(method, "summary") == 0 ||
                strcmp(method, "description") == 0 || strcmp(method, "servers") == 0)
                continue;
            ops++;
            check_params(&p, method, path, op);
            if (route_of(method, path) >= 0)
                continue;
            bad(&p, "%s %s: documented, but no route in the route table", method, path);
        }
    }
    assert_true(ops >= lab_nroutes);
    json_decref(doc);
    report(&p);
}

/* A JSON Pointer ("#/components/schemas/Run") into doc, or NULL. */
static json_t *pointer(json_t *doc, const char *ptr)
{
    json_t *node = doc;
    char tok[256];
    for (const char *s = ptr; node && *s == '/';) {
        size_t n = 0;
        for (s++; *s && *s != '/' && n < sizeof tok - 1; s++) {
            if (*s == '~' && (s[1] == '0' || s[1] == '1')) {
                tok[n++] = s[1] == '0' ? '~' : '/';
                s++;
            } else {
                tok[n++] = *s;
            }
        }
        tok[n] = 0;
        node = json_is_array(node) ? json_array_get(node, strtoul(tok, NULL, 10))
                                   : json_object_get(node, tok);
    }
    return node;
}

/* Every $ref under node: "#/..." into root (the innermost resource: the document, or a schema
 * with its own $id), anything else the $id of a component schema. */
static void check_refs(problems_t *p, json_t *doc, json_t *root, json_t *node, const char *where)
{
    if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v) check_refs(p, doc, root, v, where);
        return;
    }
    if (!json_is_object(node))
        return;
    if (json_is_string(json_object_get(node, "$id")))
        root = node;
    const char *ref = json_string_value(json_object_get(node, "$ref"));
    if (ref && ref[0] == '#') {
        if (!pointer(root, ref + 1))
            bad(p, "%s: $ref %s does not resolve", where, ref);
    } else if (ref) {
        bool found = false;
        const char *k;
        json_t *s;
        json_object_foreach(json_object_get(json_object_get(doc, "components"), "schemas"), k, s)
        {
            const char *id = json_string_value(json_object_get(s, "$id"));
            found |= id && strcmp(id, ref) == 0;
        }
        if (!found)
            bad(p, "%s: $ref %s is no component's $id", where, ref);
    }
    const char *k;
    json_t *v;
    json_object_foreach(node, k, v) check_refs(p, doc, root, v, where);
}

static void test_refs_resolve_inside_the_document(void **state)
{
    (void)state;
    problems_t p = {0};
    json_t *doc = lab_api_openapi_doc();
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    check_refs(&p, doc, doc, doc, "openapi.json");
    /* Each schema of schemas/json/ is there under its file name, as its $id says. */
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++) {
        size_t n = strlen(e->name);
        if (strncmp(e->name, "json/", 5) != 0 || n < 17 || strcmp(e->name + n - 12, ".schema.json"))
            continue;
        json_t *s = pointer(doc, "/components/schemas");
        s = json_object_get(s, e->name + 5);
        const char *id = json_string_value(json_object_get(s, "$id"));
        if (!id || strcmp(id, e->name + 5) != 0)
            bad(&p, "%s: not a component with $id %s", e->name, e->name + 5);
    }
    json_decref(doc);
    report(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_match_the_document),
        cmocka_unit_test(test_refs_resolve_inside_the_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
