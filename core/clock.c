/* The lab clock and UTC timestamp formatting. */
#include "core/clock.h"
#include "core/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lab_clock_init(lab_clock_t *c, uv_loop_t *loop, double scale)
{
    c->loop = loop;
    c->scale = scale > 0 ? scale : 1.0;
    c->origin_loop_ms = loop ? uv_now(loop) : 0;
    c->origin_wall_ms = lab_wall_ms();
}

void lab_clock_init_manual(lab_clock_t *c, uv_loop_t *loop, int64_t start_ms)
{
    *c = (lab_clock_t){.loop = loop, .scale = 1, .manual = true, .manual_ms = start_ms};
}

void lab_clock_advance(lab_clock_t *c, double lab_seconds)
{
    c->manual_ms += (int64_t)(lab_seconds * 1000.0 + 0.5);
}

void lab_clock_resume(lab_clock_t *c, int64_t newest_ms)
{
    if (newest_ms >= c->origin_wall_ms)
        c->origin_wall_ms = newest_ms + 1;
}

uint64_t lab_clock_loop_ms(const lab_clock_t *c, double lab_seconds)
{
    if (lab_seconds <= 0)
        return 0;
    if (c->manual)
        return 1;
    return (uint64_t)(lab_seconds * 1000.0 / c->scale + 0.5);
}

int64_t lab_clock_now_ms(const lab_clock_t *c)
{
    if (c->manual)
        return c->manual_ms;
    if (!c->loop)
        return lab_wall_ms();
    uint64_t elapsed = uv_now(c->loop) - c->origin_loop_ms;
    return c->origin_wall_ms + (int64_t)((double)elapsed * c->scale);
}

int64_t lab_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lab_time_iso(int64_t utc_ms, char buf[32])
{
    time_t secs = (time_t)(utc_ms / 1000);
    int ms = (int)(utc_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, ms % 1000);
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return LAB_EINVAL;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

int lab_time_parse(const char *s, int64_t *utc_ms)
{
    int y, mo, d, h, mi, sec, ms = 0;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return LAB_EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return LAB_EINVAL;
    /* RFC 3339 5.7: the day must exist in its month (timegm would quietly move 02-30 to March).
     * Year 0 does not exist in PostgreSQL's calendar, which stores these times too. */
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return LAB_EINVAL;
    if (mo == 2 && d == 29 && (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)))
        return LAB_EINVAL;
    if (*p == '.') {
        p++;
        int scale = 100, any = 0;
        while (isdigit((unsigned char)*p)) {
            ms += (*p - '0') * scale;
            scale /= 10;
            p++;
            any = 1;
        }
        if (!any)
            return LAB_EINVAL;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return LAB_EINVAL;
        offset_min = sign * (oh * 60 + om);
    } else {
        return LAB_EINVAL;
    }
    if (*p)
        return LAB_EINVAL;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    *utc_ms = ((int64_t)t - offset_min * 60) * 1000 + ms;
    return 0;
}
