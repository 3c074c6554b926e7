/* Text fields: counting and cutting on character boundaries (see text.h), on core/utf8.c. */
#include "core/text.h"
#include "core/utf8.h"

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
    return lab_utf8_cut(s, strnlen(s, max + 1), max);
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
    return lab_utf8_valid(s, len) && memchr(s, 0, len) == NULL;
}

size_t lab_text_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += !is_cont((unsigned char)s[i]);
    return n;
}
