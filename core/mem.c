/* Allocation wrappers: on exhaustion there is nothing sensible left to do but stop loudly. */
#include "core/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *oom(size_t n)
{
    fprintf(stderr, "labloop: out of memory allocating %zu bytes\n", n);
    abort();
}

void *lab_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : oom(n);
}

void *lab_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    return p ? p : oom(count * n);
}

void *lab_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom(n);
}

char *lab_strdup(const char *s)
{
    return s ? lab_strndup(s, strlen(s)) : NULL;
}

char *lab_strndup(const char *s, size_t n)
{
    char *d = lab_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *lab_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return s;
}
