/* Files compiled into the binary: schemas/ (SQL migrations, JSON schemas) and web/ (the web app
 * labloopd serves), each a table that cmake/embed.cmake generates. */
#ifndef LAB_CORE_EMBED_H
#define LAB_CORE_EMBED_H

#include <stddef.h>

typedef struct lab_embedded {
    const char *name; /* relative to its root, e.g. "sql/sqlite/0001_init.sql", "pages/cell.js" */
    const char *text; /* NUL-terminated */
    size_t len;
    const char *etag; /* "\"<16 hex digits of its SHA-256>\"", quotes included */
} lab_embedded_t;

/* Terminated by an entry whose name is NULL; sorted by name. schemas/ */
extern const lab_embedded_t lab_embedded_files[];
/* The same for web/ */
extern const lab_embedded_t lab_web_files[];

/* The file of schemas/ with this exact name, or NULL. */
const lab_embedded_t *lab_embedded_find(const char *name);
/* The file of web/ with this exact name, or NULL. */
const lab_embedded_t *lab_web_find(const char *name);

#endif
