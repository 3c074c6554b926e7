/* Bearer tokens and roles: the tokens file (one `TOKEN ROLE [NAME]` per line, `#` comments; NAME
 * required for technician and admin), the
 * roles, and the lookup of a presented token. Tokens are kept only as SHA-256 digests and compared
 * in constant time against every entry, so neither the length nor the position of a match shows
 * in the time an answer takes. */
#ifndef LAB_API_AUTH_H
#define LAB_API_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bits, so a route names the roles it allows as a set. */
typedef enum lab_role {
    LAB_ROLE_VIEWER = 1,
    LAB_ROLE_TECHNICIAN = 2,
    LAB_ROLE_PIPELINE = 4,
    LAB_ROLE_ADMIN = 8,
} lab_role_t;

#define LAB_ROLES_ALL (LAB_ROLE_VIEWER | LAB_ROLE_TECHNICIAN | LAB_ROLE_PIPELINE | LAB_ROLE_ADMIN)
/* Tokens shorter than this are refused: they could be guessed. */
#define LAB_TOKEN_MIN_LEN 8
/* Names are recorded as submitted_by and own idempotency keys: UTF-8, at most this many
 * characters (LAB_TEXT_BYTES of it in bytes). */
#define LAB_TOKEN_NAME_MAX 64

typedef struct lab_token {
    uint8_t digest[32];
    lab_role_t role;
    char *name; /* the NAME field, or the role's name when absent */
    bool named; /* NAME was given: the token is a person's, who may sign decisions */
} lab_token_t;

typedef struct lab_tokens {
    lab_token_t *v;
    int n;
} lab_tokens_t;

/* -1 when the name is not a role. */
int lab_role_parse(const char *name);
const char *lab_role_name(lab_role_t role);

/* Parses a tokens file's text; `file` names it in errors. Technician and admin tokens must name
 * their person (their decisions are signed records); viewer and pipeline tokens need not. Returns
 * 0, or LAB_ECONFIG with "FILE:LINE: reason" in err (out is then empty). */
int lab_tokens_parse(const char *text, size_t len, const char *file, lab_tokens_t *out, char *err,
                     size_t errlen);
/* Reads and parses the file; LAB_ECONFIG with the reason in err. */
int lab_tokens_load(const char *path, lab_tokens_t *out, char *err, size_t errlen);
void lab_tokens_free(lab_tokens_t *t);

/* The entry for a presented token, or NULL. Compares against every entry, always. */
const lab_token_t *lab_tokens_find(const lab_tokens_t *t, const char *token, size_t len);

/* Equality of two buffers of n bytes in time that depends only on n. */
bool lab_ct_equal(const void *a, const void *b, size_t n);
/* How many times lab_ct_equal ran (loop thread only); lets tests see that lookups use it. */
extern unsigned long lab_ct_compares;

#endif
