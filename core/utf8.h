/* UTF-8 for text that came from outside: check it, cut it at a character boundary, make it valid.
 * "Valid" is what jansson accepts: no overlong forms, no surrogates, nothing above U+10FFFF. */
#ifndef LAB_CORE_UTF8_H
#define LAB_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether the len bytes at s are valid UTF-8 (U+0000 included). */
bool lab_utf8_valid(const char *s, size_t len);

/* The longest prefix of s (len bytes) of at most max bytes that does not end inside a character.
 * Bytes that are not part of a valid character count as characters of their own. */
size_t lab_utf8_cut(const char *s, size_t len, size_t max);

/* Copies the len bytes at s into out (cap bytes, cap >= 1, NUL-terminated): each byte that is not
 * part of a valid character, and each NUL, becomes U+FFFD; the copy ends at a character boundary
 * where the next character would not fit. Returns the length written (strlen(out)). */
size_t lab_utf8_sanitize(char *out, size_t cap, const char *s, size_t len);

#endif
