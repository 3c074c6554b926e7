/* A JSON Schema validator (a subset of draft 2020-12) for the documents the API and the MQTT intake
 * accept. It names every problem at once, each with an RFC 6901 JSON Pointer into the document.
 * A schema using a keyword it does not implement is refused when compiled, never half-checked. */
#ifndef LAB_CORE_JSCHEMA_H
#define LAB_CORE_JSCHEMA_H

#include <jansson.h>
#include <stddef.h>

typedef struct lab_jerr {
    char *path; /* JSON Pointer: "" for the root, "/params/volume_ul", "/wells/3" */
    char *message;
} lab_jerr_t;

typedef struct lab_jerrs {
    lab_jerr_t *v;
    int n, cap;
} lab_jerrs_t;

typedef struct lab_jschema lab_jschema_t;

/* NULL, with the reason in err, when the schema is not JSON or uses what is not supported. */
lab_jschema_t *lab_jschema_compile(const char *schema_text, char *err, size_t errlen);
/* The embedded schema schemas/json/NAME, compiled on first use and kept; NULL if absent or bad
 * (logged). Loop thread only. */
lab_jschema_t *lab_jschema_get(const char *name);
void lab_jschema_free(lab_jschema_t *s);

/* Appends every problem of instance to errs; returns how many were found (0: valid). */
int lab_jschema_validate(const lab_jschema_t *s, const json_t *instance, lab_jerrs_t *errs);

void lab_jerrs_add(lab_jerrs_t *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lab_jerrs_free(lab_jerrs_t *e);
/* [{"path": ..., "message": ...}, ...] */
json_t *lab_jerrs_to_json(const lab_jerrs_t *e);
/* Appends "/" + the token escaped (~0, ~1) to base; a new string. */
char *lab_jpointer_append(const char *base, const char *token);

#endif
