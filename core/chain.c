/* The audit chain: digests, canonical JSON, entry hashes and the check of a stored chain. */
#include "core/chain.h"
#include "core/mem.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lab_chain_hex(const uint8_t digest[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[64] = '\0';
}

void lab_chain_sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    /* EVP_Digest fails only when OpenSSL cannot allocate: fatal, as any OOM is (core/mem.h). */
    if (!EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) || len != 32)
        abort();
}

void lab_chain_digest_hex(const void *data, size_t n, char out[65])
{
    uint8_t d[32];
    lab_chain_sha256(data, n, d);
    lab_chain_hex(d, out);
}

char *lab_chain_canonical(const json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

void lab_chain_hash(const char *prev_hash, const char *canonical, char out[65])
{
    uint8_t d[32];
    unsigned len = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(c, prev_hash, strlen(prev_hash)) ||
        !EVP_DigestUpdate(c, canonical, strlen(canonical)) || !EVP_DigestFinal_ex(c, d, &len))
        abort();
    EVP_MD_CTX_free(c);
    lab_chain_hex(d, out);
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The entry's string field, NULL when absent or null; "" marks a field of another type so that
 * it differs from any column. */
static const char *entry_str(const json_t *e, const char *key)
{
    const json_t *v = json_object_get(e, key);
    if (!v || json_is_null(v))
        return NULL;
    return json_is_string(v) ? json_string_value(v) : "\x01";
}

static void check_one(const lab_chain_row_t *r, lab_chain_problem_cb problem, void *ctx)
{
    char msg[160];
    if (!r->entry || !r->hash || !r->prev_hash) {
        problem(ctx, r->seq, "entry, hash or prev_hash missing");
        return;
    }
    char h[65];
    lab_chain_hash(r->prev_hash, r->entry, h);
    if (strcmp(h, r->hash) != 0)
        problem(ctx, r->seq, "hash does not match prev_hash and the entry (entry edited)");
    json_error_t err;
    json_t *e = json_loads(r->entry, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(e)) {
        problem(ctx, r->seq, "entry is not a JSON object");
        json_decref(e);
        return;
    }
    char *canon = lab_chain_canonical(e);
    if (!canon || strcmp(canon, r->entry) != 0)
        problem(ctx, r->seq, "entry is not canonical JSON");
    free(canon);
    json_t *s = json_object_get(e, "seq");
    if (!json_is_integer(s) || json_integer_value(s) != r->seq) {
        snprintf(msg, sizeof msg, "row is at seq %lld but its entry says seq %lld (moved)",
                 (long long)r->seq, json_is_integer(s) ? (long long)json_integer_value(s) : -1LL);
        problem(ctx, r->seq, msg);
    }
    static const char *const fields[] = {"prev_hash", "who", "what", "subject", "why"};
    const char *cols[] = {r->prev_hash, r->who, r->what, r->subject, r->why};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (!same(cols[i], entry_str(e, fields[i]))) {
            snprintf(msg, sizeof msg, "column %s differs from the hashed entry (edited)",
                     fields[i]);
            problem(ctx, r->seq, msg);
        }
    json_decref(e);
}

typedef struct counter {
    lab_chain_problem_cb cb;
    void *ctx;
    int n;
} counter_t;

static void count_problem(void *ctx, int64_t seq, const char *problem)
{
    counter_t *c = ctx;
    c->n++;
    c->cb(c->ctx, seq, problem);
}

int lab_chain_check(const lab_chain_row_t *rows, int n, int64_t first_seq,
                    lab_chain_problem_cb problem, void *ctx)
{
    counter_t c = {problem, ctx, 0};
    char msg[160];
    int64_t want = first_seq;
    const char *prev_hash = first_seq == 1 ? LAB_CHAIN_GENESIS : NULL;
    for (int i = 0; i < n; i++) {
        const lab_chain_row_t *r = &rows[i];
        if (r->seq > want) {
            if (r->seq == want + 1)
                snprintf(msg, sizeof msg, "entry %lld is missing (deleted)", (long long)want);
            else
                snprintf(msg, sizeof msg, "entries %lld to %lld are missing (deleted)",
                         (long long)want, (long long)r->seq - 1);
            count_problem(&c, want, msg);
        } else if (r->seq < want) {
            snprintf(msg, sizeof msg, "seq %lld comes after seq %lld (out of order)",
                     (long long)r->seq, (long long)want - 1);
            count_problem(&c, r->seq, msg);
        }
        check_one(r, count_problem, &c);
        /* The link is checked against the row stored before, whatever happened to the seqs:
         * a deleted or moved entry breaks it exactly where it was. */
        if (prev_hash && r->prev_hash && strcmp(prev_hash, r->prev_hash) != 0) {
            snprintf(msg, sizeof msg, "prev_hash is not the hash of the entry stored before it%s",
                     i == 0 ? " (the genesis)" : "");
            count_problem(&c, r->seq, msg);
        }
        prev_hash = r->hash;
        want = r->seq + 1;
    }
    return c.n;
}
