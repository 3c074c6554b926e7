/* Files from schemas/ compiled into the binary (SQL migrations, JSON schemas). */
#ifndef LAB_CORE_EMBED_H
#define LAB_CORE_EMBED_H

#include <stddef.h>

typedef struct lab_embedded {
    const char *name; /* relative to schemas/, e.g. "sql/sqlite/0001_init.sql" */
    const char *text; /* NUL-terminated */
    size_t len;
} lab_embedded_t;

/* Terminated by an entry whose name is NULL; sorted by name. */
extern const lab_embedded_t lab_embedded_files[];

/* The file with this exact name, or NULL. */
const lab_embedded_t *lab_embedded_find(const char *name);

#endif
