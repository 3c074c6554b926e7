/* Lookup over the table that cmake/embed.cmake generates. */
#include "core/embed.h"

#include <string.h>

const lab_embedded_t *lab_embedded_find(const char *name)
{
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}
