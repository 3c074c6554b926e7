/* Lookup over the tables that cmake/embed.cmake generates. */
#include "core/embed.h"

#include <string.h>

static const lab_embedded_t *table_find(const lab_embedded_t *t, const char *name)
{
    for (const lab_embedded_t *e = t; e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

const lab_embedded_t *lab_embedded_find(const char *name)
{
    return table_find(lab_embedded_files, name);
}

const lab_embedded_t *lab_web_find(const char *name)
{
    return table_find(lab_web_files, name);
}
