/* Lab time. Domain durations are lab seconds; the lab clock maps them onto the loop's clock with
 * time_scale (1 in production, 60 or 600 in a simulation). Record timestamps are lab wall time:
 * the wall clock at start plus elapsed loop time times the scale. */
#ifndef LAB_CORE_CLOCK_H
#define LAB_CORE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct lab_clock {
    uv_loop_t *loop;
    double scale;
    uint64_t origin_loop_ms;
    int64_t origin_wall_ms;
    bool manual; /* a test's clock: lab time is manual_ms, moved by lab_clock_advance */
    int64_t manual_ms;
} lab_clock_t;

void lab_clock_init(lab_clock_t *c, uv_loop_t *loop, double scale);
/* A clock for tests: lab time stands at start_ms until lab_clock_advance moves it, and a timer
 * armed for a lab duration fires after one loop millisecond, so the code under test looks at the
 * time again while the test moves it. */
void lab_clock_init_manual(lab_clock_t *c, uv_loop_t *loop, int64_t start_ms);
void lab_clock_advance(lab_clock_t *c, double lab_seconds);
/* After a restart: lab time goes on from the newest lab time the store recorded when that is
 * later than the wall clock (a simulation at time_scale 600 ran ahead of it), so recorded times
 * never lie in the future. The time the daemon was down counts as nothing then. */
void lab_clock_resume(lab_clock_t *c, int64_t newest_ms);
/* Loop milliseconds for a lab duration (for uv timers); at least 0. */
uint64_t lab_clock_loop_ms(const lab_clock_t *c, double lab_seconds);
/* Lab wall time, in UTC milliseconds since the epoch. */
int64_t lab_clock_now_ms(const lab_clock_t *c);

/* The real UTC wall clock, in milliseconds. */
int64_t lab_wall_ms(void);
/* "2026-11-22T10:00:00.123Z" into buf (at least 25 bytes). */
void lab_time_iso(int64_t utc_ms, char buf[32]);
/* Parse an RFC 3339 timestamp (Z or +hh:mm, optional fraction): 0, or LAB_EINVAL. */
int lab_time_parse(const char *s, int64_t *utc_ms);

#endif
