/* Log lines: "2026-11-22T10:00:00.123Z info  store: outbox committed rows=12". */
#include "core/log.h"
#include "core/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lab_log_threshold = LAB_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lab_log_set_level(int level)
{
    if (level >= LAB_LOG_DEBUG && level <= LAB_LOG_ERROR)
        lab_log_threshold = level;
}

int lab_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *lab_log_level_name(int level)
{
    return level >= 0 && level <= LAB_LOG_ERROR ? level_names[level] : "?";
}

void lab_log_write(int level, const char *sub, const char *fmt, ...)
{
    char ts[32], msg[2048];
    lab_time_iso(lab_wall_ms(), ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages quote outside text (request paths, device replies): a control character is
     * written as \xNN, so no one can end a line and forge the next. */
    char out[sizeof msg * 4];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p < 0x20 && *p != '\t')
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
        else if (*p == 0x7f)
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x7f");
        else
            out[o++] = (char)*p;
    }
    out[o] = 0;
    /* One fprintf per line so lines from Paho's threads never interleave mid-line. */
    fprintf(stderr, "%s %-5s %s: %s\n", ts, lab_log_level_name(level), sub, out);
}
