/* UTF-8 checks for outside text (see utf8.h). One decoder, seq_len, says how long the valid
 * character at a position is; everything else is built on it. */
#include "core/utf8.h"

#include <stdint.h>
#include <string.h>

/* The length (1-4) of the valid character at s[0] (n bytes available), or 0 when s[0] does not
 * start one: a stray continuation byte, an overlong form, a surrogate, above U+10FFFF, or cut
 * short by the end of the input. */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* the range allowed for the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates above */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool lab_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t lab_utf8_cut(const char *s, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len <= max)
        return len;
    size_t i = 0;
    while (i < max) {
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            n = 1; /* an invalid byte stands alone */
        if (i + n > max)
            break;
        i += n;
    }
    return i;
}

size_t lab_utf8_sanitize(char *out, size_t cap, const char *s, size_t len)
{
    static const char repl[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    if (cap == 0)
        return 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        const char *from = s + i;
        size_t w = n;
        if (n == 0 || p[i] == 0) {
            from = repl;
            w = 3;
            n = 1;
        }
        if (o + w > cap - 1)
            break;
        memcpy(out + o, from, w);
        o += w;
        i += n;
    }
    out[o] = 0;
    return o;
}
