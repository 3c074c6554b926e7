/* The audit chain's arithmetic, shared by the daemon (writing and checking its store), the CLI
 * (checking PostgreSQL's copy on its own) and the tests: SHA-256 through OpenSSL, the canonical
 * JSON of an entry, an entry's hash, and the check of a chain of entries in seq order.
 *
 * An entry is a JSON object {seq, prev_hash, who, what, subject, lab_time, wall_time, why, doc}.
 * Its canonical JSON is jansson's compact dump with keys sorted (JSON_COMPACT | JSON_SORT_KEYS,
 * UTF-8 unescaped, reals as "%.17g" with ".0" when that has neither '.' nor 'e'), and
 * hash = lowercase hex of SHA-256(prev_hash's 64 hex characters || canonical JSON).
 * tools/audit_verify.py recomputes the same in Python. */
#ifndef LAB_CORE_CHAIN_H
#define LAB_CORE_CHAIN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The prev_hash of a chain's first entry. */
#define LAB_CHAIN_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

/* 64 lowercase hex digits of a 32-byte digest, and a NUL. */
void lab_chain_hex(const uint8_t digest[32], char out[65]);
/* SHA-256 of n bytes (OpenSSL). */
void lab_chain_sha256(const void *data, size_t n, uint8_t out[32]);
/* The same as 64 lowercase hex digits. */
void lab_chain_digest_hex(const void *data, size_t n, char out[65]);

/* The canonical JSON text of a JSON value (malloc'd), NULL when it cannot be dumped. */
char *lab_chain_canonical(const json_t *v);
/* SHA-256(prev_hash || canonical) in hex. */
void lab_chain_hash(const char *prev_hash, const char *canonical, char out[65]);

/* One stored entry as a store or PostgreSQL holds it: the columns, and the canonical text that
 * was hashed. Every string may be NULL (a column that is NULL). */
typedef struct lab_chain_row {
    int64_t seq;
    const char *prev_hash, *hash;
    const char *who, *what, *subject, *why;
    const char *entry; /* the canonical JSON the hash covers */
} lab_chain_row_t;

/* Checks rows in the order given (the stored seq order): each entry's text is canonical and
 * agrees with its columns, its hash is right, its prev_hash is the hash of the row before (the
 * first's is LAB_CHAIN_GENESIS when first_seq is 1), and seqs go up by one from first_seq.
 * Calls problem(ctx, seq, text) for each fault found (seq: where it was found) and returns the
 * number found. */
typedef void (*lab_chain_problem_cb)(void *ctx, int64_t seq, const char *problem);
int lab_chain_check(const lab_chain_row_t *rows, int n, int64_t first_seq,
                    lab_chain_problem_cb problem, void *ctx);

#endif
