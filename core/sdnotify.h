/* The service manager's notify protocol (sd_notify(3)) without libsystemd: one datagram of
 * "KEY=VALUE\n" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace), and the watchdog: WATCHDOG=1 from a loop timer at half of $WATCHDOG_USEC,
 * so a loop that stops turning stops the pings and the manager restarts the daemon.
 *
 * Without $NOTIFY_SOCKET every call does nothing and returns 0: the daemon run by hand or under
 * a manager that does not listen behaves as before. */
#ifndef LAB_CORE_SDNOTIFY_H
#define LAB_CORE_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

typedef struct lab_sdnotify {
    int fd; /* -1: off ($NOTIFY_SOCKET unset) */
    struct sockaddr_un addr;
    socklen_t addrlen;
    uint64_t watchdog_ms; /* ping period (half of $WATCHDOG_USEC); 0: no watchdog asked for */
    uv_timer_t timer;
    bool timer_open;
    unsigned long long pings;   /* WATCHDOG=1 datagrams sent */
    unsigned long long dropped; /* refusals since the last datagram that went (the first logged) */
} lab_sdnotify_t;

/* Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. 0 (n is off when $NOTIFY_SOCKET is
 * unset or empty), or LAB_ECONFIG with the reason in err when a variable is set but unusable
 * (not an absolute path or @name, longer than a socket address holds, a watchdog period that is
 * not a positive number of microseconds), or LAB_EIO when no socket can be made. */
int lab_sdnotify_open(lab_sdnotify_t *n, char *err, size_t errlen);
bool lab_sdnotify_on(const lab_sdnotify_t *n);
/* Sends one datagram (printf format; lines joined with '\n'). 0, LAB_ETOOBIG when the text does
 * not fit one datagram (4 KiB here), or LAB_EIO when the socket refused it (no listener, or
 * its queue is full: the call never blocks the loop). */
int lab_sdnotify_send(lab_sdnotify_t *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Starts the watchdog pings on loop when the manager asked for them (a no-op otherwise). The
 * timer is unreferenced: it never keeps the loop alive by itself. */
int lab_sdnotify_watchdog_start(lab_sdnotify_t *n, uv_loop_t *loop);
/* Stops the pings and closes the socket; the timer's handle closes on the loop (run it once
 * more before freeing n). */
void lab_sdnotify_close(lab_sdnotify_t *n);

/* Parses a $NOTIFY_SOCKET value into addr: 0, or LAB_ECONFIG with the reason in err. */
int lab_sdnotify_parse_addr(const char *v, struct sockaddr_un *addr, socklen_t *addrlen, char *err,
                            size_t errlen);
/* The ping period for $WATCHDOG_USEC and $WATCHDOG_PID as given (either may be NULL) and this
 * process's pid: half the period in ms (at least 1) into *ms, 0 there when no watchdog is asked
 * of this process. 0, or LAB_ECONFIG with the reason in err. */
int lab_sdnotify_parse_watchdog(const char *usec, const char *pid, long self, uint64_t *ms,
                                char *err, size_t errlen);

#endif
