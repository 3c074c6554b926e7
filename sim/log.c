/* labloop-sim logging: timestamped lines on stderr. */
#include "sim/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

void sim_log(const char *level, const char *sub, const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%02d:%02d:%02d.%03ld %s sim.%s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, level, sub, line);
}
