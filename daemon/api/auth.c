/* The tokens file and token lookup. */
#include "daemon/api/auth.h"
#include "core/chain.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long lab_ct_compares;

static const struct {
    const char *name;
    lab_role_t role;
} roles[] = {
    {"viewer", LAB_ROLE_VIEWER},
    {"technician", LAB_ROLE_TECHNICIAN},
    {"pipeline", LAB_ROLE_PIPELINE},
    {"admin", LAB_ROLE_ADMIN},
};

#define NROLES ((int)(sizeof roles / sizeof roles[0]))

int lab_role_parse(const char *name)
{
    for (int i = 0; i < NROLES; i++)
        if (strcmp(roles[i].name, name) == 0)
            return (int)roles[i].role;
    return -1;
}

const char *lab_role_name(lab_role_t role)
{
    for (int i = 0; i < NROLES; i++)
        if (roles[i].role == role)
            return roles[i].name;
    return "?";
}

bool lab_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    lab_ct_compares++;
    return d == 0;
}

void lab_tokens_free(lab_tokens_t *t)
{
    for (int i = 0; i < t->n; i++)
        free(t->v[i].name);
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* Splits one line into at most 4 whitespace-separated fields (a 4th means too many); a field
 * that starts with '#' ends the line. */
static int split_fields(char *line, char *f[4])
{
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        if (tok[0] == '#')
            break;
        if (n == 4)
            break;
        f[n++] = tok;
    }
    return n;
}

int lab_tokens_parse(const char *text, size_t len, const char *file, lab_tokens_t *out, char *err,
                     size_t errlen)
{
    lab_tokens_t t = {0};
    int cap = 0, lineno = 0;
    const char *p = text, *end = text + len;
    char *line = NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        free(line);
        line = lab_strndup(p, n);
        p += n + (nl ? 1 : 0);
        if (memchr(line, '\0', n)) {
            snprintf(err, errlen, "%s:%d: a NUL byte in the line", file, lineno);
            goto fail;
        }
        char *f[4];
        int nf = split_fields(line, f);
        if (nf == 0)
            continue;
        if (nf == 1) {
            snprintf(err, errlen, "%s:%d: expected TOKEN ROLE [NAME], the role is missing", file,
                     lineno);
            goto fail;
        }
        if (nf > 3) {
            snprintf(err, errlen, "%s:%d: expected TOKEN ROLE [NAME], found more fields", file,
                     lineno);
            goto fail;
        }
        int role = lab_role_parse(f[1]);
        if (role < 0) {
            snprintf(err, errlen,
                     "%s:%d: unknown role \"%.32s\" (viewer, technician, pipeline or admin)", file,
                     lineno, f[1]);
            goto fail;
        }
        if (strlen(f[0]) < LAB_TOKEN_MIN_LEN) {
            snprintf(err, errlen, "%s:%d: token shorter than %d characters", file, lineno,
                     LAB_TOKEN_MIN_LEN);
            goto fail;
        }
        if (nf == 3 && !lab_text_valid(f[2], strlen(f[2]))) {
            snprintf(err, errlen, "%s:%d: the name is not UTF-8 text", file, lineno);
            goto fail;
        }
        if (nf == 3 && lab_text_chars(f[2], strlen(f[2])) > LAB_TOKEN_NAME_MAX) {
            snprintf(err, errlen, "%s:%d: name longer than %d characters", file, lineno,
                     LAB_TOKEN_NAME_MAX);
            goto fail;
        }
        if (nf == 2 && (role == LAB_ROLE_TECHNICIAN || role == LAB_ROLE_ADMIN)) {
            snprintf(err, errlen,
                     "%s:%d: %s tokens must name their person (TOKEN %s NAME): their decisions "
                     "are signed with that name",
                     file, lineno, f[1], f[1]);
            goto fail;
        }
        uint8_t digest[32];
        lab_chain_sha256(f[0], strlen(f[0]), digest);
        for (int i = 0; i < t.n; i++) {
            if (memcmp(t.v[i].digest, digest, 32) == 0) {
                snprintf(err, errlen, "%s:%d: the same token appears on an earlier line", file,
                         lineno);
                goto fail;
            }
        }
        if (t.n == cap) {
            cap = cap ? cap * 2 : 8;
            t.v = lab_realloc(t.v, (size_t)cap * sizeof *t.v);
        }
        lab_token_t *e = &t.v[t.n++];
        memcpy(e->digest, digest, 32);
        e->role = (lab_role_t)role;
        e->name = lab_strdup(nf == 3 ? f[2] : lab_role_name((lab_role_t)role));
        e->named = nf == 3;
    }
    free(line);
    *out = t;
    return 0;
fail:
    free(line);
    lab_tokens_free(&t);
    *out = (lab_tokens_t){0};
    return LAB_ECONFIG;
}

int lab_tokens_load(const char *path, lab_tokens_t *out, char *err, size_t errlen)
{
    *out = (lab_tokens_t){0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return LAB_ECONFIG;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    char buf[4096];
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + got > cap) {
            cap = (len + got) * 2;
            text = lab_realloc(text, cap);
        }
        memcpy(text + len, buf, got);
        len += got;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        snprintf(err, errlen, "%s: read error", path);
        return LAB_ECONFIG;
    }
    int rc = lab_tokens_parse(text ? text : "", len, path, out, err, errlen);
    free(text);
    return rc;
}

const lab_token_t *lab_tokens_find(const lab_tokens_t *t, const char *token, size_t len)
{
    uint8_t digest[32];
    lab_chain_sha256(token, len, digest);
    const lab_token_t *found = NULL;
    /* No early exit: every entry is compared whether or not one matched. */
    for (int i = 0; i < t->n; i++) {
        bool eq = lab_ct_equal(t->v[i].digest, digest, 32);
        if (eq && !found)
            found = &t->v[i];
    }
    return found;
}
