/* Keyence SR/BL command and reply codec. Sources are listed in keyence.h. */
#include "protocols/keyence.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const char *const cmd_names[KEYENCE_CMD_N] = {"LON", "LOFF", "RMOTOR"};

/* Replies that are one fixed word, and what they mean. */
static const struct {
    const char *word;
    keyence_reply_kind_t kind;
} words[] = {
    {"ERROR", KEYENCE_REPLY_NOREAD},
    {"NG", KEYENCE_REPLY_NG},
    {"MOTORON", KEYENCE_REPLY_MOTORON},
    {"MOTOROFF", KEYENCE_REPLY_MOTOROFF},
};

const char *keyence_cmd_name(keyence_cmd_t c)
{
    return c >= 0 && c < KEYENCE_CMD_N ? cmd_names[c] : "?";
}

int keyence_encode_cmd(keyence_cmd_t c, char *buf, size_t cap)
{
    if (c < 0 || c >= KEYENCE_CMD_N)
        return LAB_EINVAL;
    int n = snprintf(buf, cap, "%s\r", cmd_names[c]);
    return n < 0 || (size_t)n >= cap ? LAB_ENOSPACE : n;
}

static keyence_cmd_t cmd_lookup(const char *s, size_t len)
{
    for (int i = 0; i < KEYENCE_CMD_N; i++)
        if (strlen(cmd_names[i]) == len && memcmp(cmd_names[i], s, len) == 0)
            return (keyence_cmd_t)i;
    return KEYENCE_CMD_N;
}

int keyence_parse_cmd(const char *line, size_t len, keyence_cmd_t *out)
{
    keyence_cmd_t c = cmd_lookup(line, len);
    if (c == KEYENCE_CMD_N)
        return LAB_EUNKNOWN;
    *out = c;
    return LAB_OK;
}

static bool printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* Two decimal digits, exactly. */
static int two_digits(const char *s, size_t len)
{
    if (len != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* "OK,<cmd>" or "ER,<cmd>,<ee>": the command word is 1..15 letters. */
static int parse_answer(const char *line, size_t len, keyence_reply_t *out)
{
    bool er = line[0] == 'E';
    const char *cmd = line + 3;
    const char *end = line + len;
    const char *comma = memchr(cmd, ',', (size_t)(end - cmd));
    const char *cmd_end = er ? comma : end;
    if (!cmd_end || cmd_end == cmd || (size_t)(cmd_end - cmd) >= sizeof out->cmd_text)
        return LAB_ESYNTAX;
    if (!er && comma)
        return LAB_ESYNTAX;
    for (const char *p = cmd; p < cmd_end; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return LAB_ESYNTAX;
    if (er) {
        out->code = two_digits(comma + 1, (size_t)(end - comma - 1));
        if (out->code < 0)
            return LAB_ESYNTAX;
    }
    memcpy(out->cmd_text, cmd, (size_t)(cmd_end - cmd));
    out->cmd_text[cmd_end - cmd] = '\0';
    out->cmd = cmd_lookup(cmd, (size_t)(cmd_end - cmd));
    out->kind = er ? KEYENCE_REPLY_ER : KEYENCE_REPLY_OK;
    return LAB_OK;
}

int keyence_parse_reply(const char *line, size_t len, keyence_reply_t *out)
{
    memset(out, 0, offsetof(keyence_reply_t, data));
    out->data[0] = '\0';
    out->len = 0;
    out->cmd = KEYENCE_CMD_N;
    out->code = -1;
    if (!line || len == 0 || !printable(line, len))
        return LAB_ESYNTAX;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i].word) == len && memcmp(words[i].word, line, len) == 0) {
            out->kind = words[i].kind;
            return LAB_OK;
        }
    if (len >= 3 && (memcmp(line, "OK,", 3) == 0 || memcmp(line, "ER,", 3) == 0))
        return parse_answer(line, len, out);
    if (len == 5 && memcmp(line, "ERR", 3) == 0) {
        out->code = two_digits(line + 3, 2);
        if (out->code < 0)
            return LAB_ESYNTAX;
        out->kind = KEYENCE_REPLY_ERR;
        return LAB_OK;
    }
    if (len > KEYENCE_DATA_MAX)
        return LAB_ETOOLONG;
    memcpy(out->data, line, len);
    out->data[len] = '\0';
    out->len = len;
    out->kind = KEYENCE_REPLY_DATA;
    return LAB_OK;
}

int keyence_encode_reply(const keyence_reply_t *r, char *buf, size_t cap)
{
    int n = -1;
    switch (r->kind) {
    case KEYENCE_REPLY_DATA: {
        keyence_reply_t back;
        if (keyence_parse_reply(r->data, r->len, &back) != LAB_OK ||
            back.kind != KEYENCE_REPLY_DATA)
            return LAB_EINVAL;
        n = snprintf(buf, cap, "%.*s\r", (int)r->len, r->data);
        break;
    }
    case KEYENCE_REPLY_OK:
    case KEYENCE_REPLY_ER: {
        const char *c = r->cmd < KEYENCE_CMD_N ? cmd_names[r->cmd] : r->cmd_text;
        if (!c[0] || (r->kind == KEYENCE_REPLY_ER && (r->code < 0 || r->code > 99)))
            return LAB_EINVAL;
        n = r->kind == KEYENCE_REPLY_OK ? snprintf(buf, cap, "OK,%s\r", c)
                                        : snprintf(buf, cap, "ER,%s,%02d\r", c, r->code);
        break;
    }
    case KEYENCE_REPLY_ERR:
        if (r->code < 0 || r->code > 99)
            return LAB_EINVAL;
        n = snprintf(buf, cap, "ERR%02d\r", r->code);
        break;
    default:
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
            if (words[i].kind == r->kind)
                n = snprintf(buf, cap, "%s\r", words[i].word);
    }
    if (n < 0)
        return LAB_EINVAL;
    return (size_t)n >= cap ? LAB_ENOSPACE : n;
}
