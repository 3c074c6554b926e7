/* Allocation that aborts on exhaustion, so callers stay readable. */
#ifndef LAB_CORE_MEM_H
#define LAB_CORE_MEM_H

#include <stddef.h>

void *lab_malloc(size_t n);
void *lab_calloc(size_t count, size_t n);
void *lab_realloc(void *p, size_t n);
char *lab_strdup(const char *s);
char *lab_strndup(const char *s, size_t n);
char *lab_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define LAB_NEW(type) ((type *)lab_calloc(1, sizeof(type)))

#endif
