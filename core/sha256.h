/* SHA-256 (FIPS 180-4), for hashing bearer tokens (so every comparison has the same length) and
 * idempotent requests (method, path and body). */
#ifndef LAB_CORE_SHA256_H
#define LAB_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct lab_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes so far */
    uint8_t buf[64];
    size_t nbuf;
} lab_sha256_t;

void lab_sha256_init(lab_sha256_t *s);
void lab_sha256_update(lab_sha256_t *s, const void *data, size_t n);
void lab_sha256_final(lab_sha256_t *s, uint8_t out[32]);
/* One call: the digest of data. */
void lab_sha256(const void *data, size_t n, uint8_t out[32]);
/* 64 lowercase hex digits and a NUL. */
void lab_sha256_hex(const uint8_t digest[32], char out[65]);

#endif
