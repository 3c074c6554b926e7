/* GET /v1/openapi.json: the API's OpenAPI 3.1 document. The document is kept by hand in
 * schemas/json/openapi.json (the route table stays the one truth for paths, methods and roles:
 * unit test test_openapi compares them); the request schemas of schemas/json/ are added here as
 * components under their file names, each with its $id, so that a client resolves every $ref
 * inside the one document it fetched and the schemas are never written down twice. */
#include "daemon/api/api_int.h"
#include "core/embed.h"

#include <string.h>

#define SCHEMA_DIR "json/"
#define SCHEMA_SUFFIX ".schema.json"

static bool is_schema(const char *name)
{
    size_t n = strlen(name), dl = strlen(SCHEMA_DIR), sl = strlen(SCHEMA_SUFFIX);
    return n > dl + sl && strncmp(name, SCHEMA_DIR, dl) == 0 &&
           strcmp(name + n - sl, SCHEMA_SUFFIX) == 0 && !strchr(name + dl, '/');
}

json_t *lab_api_openapi_doc(void)
{
    const lab_embedded_t *e = lab_embedded_find(SCHEMA_DIR "openapi.json");
    json_t *doc = e ? json_loadb(e->text, e->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    if (!json_is_object(schemas))
        goto fail;
    for (e = lab_embedded_files; e->name; e++) {
        if (!is_schema(e->name))
            continue;
        json_t *s = json_loadb(e->text, e->len, JSON_REJECT_DUPLICATES, NULL);
        if (!s || json_object_set_new(schemas, e->name + strlen(SCHEMA_DIR), s))
            goto fail;
    }
    return doc;
fail:
    json_decref(doc);
    return NULL;
}

void lab_api_openapi(lab_req_t *rq)
{
    json_t *doc = lab_api_openapi_doc();
    if (!doc) {
        lab_respond_internal(rq, "the embedded OpenAPI document does not read");
        return;
    }
    lab_respond_json(rq, 200, doc);
}
