/* UTF-8 text: validation, counting and cutting on character boundaries (see text.h). */
#include "core/text.h"

#include <string.h>

static bool is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* The length of the sequence a lead byte starts, 0 for a byte that cannot start one. */
static size_t seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

size_t lab_text_fit(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n <= max)
        return n;
    n = max; /* s[n] is the first byte left out: back up to the start of its character */
    while (n > 0 && is_cont((unsigned char)s[n]))
        n--;
    return n;
}

void lab_text_copy(char *dst, size_t cap, const char *s)
{
    if (cap == 0)
        return;
    size_t n = lab_text_fit(s ? s : "", cap - 1);
    memmove(dst, s ? s : "", n);
    dst[n] = '\0';
}

void lab_text_trim(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 3 && is_cont((unsigned char)s[i - 1]))
        i--;
    if (i == 0)
        return;
    /* s[i - 1] leads the last character; n - i of its bytes follow it */
    size_t need = seq_len((unsigned char)s[i - 1]);
    if (need > 1 && 1 + (n - i) < need)
        s[i - 1] = '\0';
}

bool lab_text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        size_t n = seq_len(*p);
        if (n == 0 || (size_t)(end - p) < n || (n == 1 && *p == 0))
            return false;
        for (size_t k = 1; k < n; k++)
            if (!is_cont(p[k]))
                return false;
        /* the second byte's range rules out overlong forms, surrogates and > U+10FFFF */
        if ((*p == 0xE0 && p[1] < 0xA0) || (*p == 0xED && p[1] > 0x9F) ||
            (*p == 0xF0 && p[1] < 0x90) || (*p == 0xF4 && p[1] > 0x8F))
            return false;
        p += n;
    }
    return true;
}

size_t lab_text_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += !is_cont((unsigned char)s[i]);
    return n;
}
