/* sd_notify(3) spoken directly: the protocol is one datagram per message on a Unix socket, so the
 * daemon needs no libsystemd. The socket is non-blocking: a manager that stopped reading must
 * cost a dropped status line, never a stalled loop. */
#include "core/sdnotify.h"

#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* systemd reads at most a page of a notify datagram's text; ours are a few lines. */
enum { SDN_MAX = 4096 };

int lab_sdnotify_parse_addr(const char *v, struct sockaddr_un *addr, socklen_t *addrlen, char *err,
                            size_t errlen)
{
    size_t len = v ? strlen(v) : 0;
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (len == 0 || (v[0] != '/' && v[0] != '@')) {
        snprintf(err, errlen, "NOTIFY_SOCKET='%s' is neither an absolute path nor @name",
                 v ? v : "");
        return LAB_ECONFIG;
    }
    if (len == 1 && v[0] == '@') {
        snprintf(err, errlen, "NOTIFY_SOCKET='@' names no abstract socket");
        return LAB_ECONFIG;
    }
    /* a path needs its terminating NUL inside sun_path; an abstract name does not */
    if (len > sizeof addr->sun_path - (v[0] == '/')) {
        snprintf(err, errlen, "NOTIFY_SOCKET is %zu bytes, more than a socket address holds (%zu)",
                 len, sizeof addr->sun_path - (v[0] == '/'));
        return LAB_ECONFIG;
    }
    memcpy(addr->sun_path, v, len);
    if (v[0] == '@') {
        addr->sun_path[0] = '\0'; /* the abstract namespace: the length says where it ends */
        *addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        *addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    return 0;
}

int lab_sdnotify_parse_watchdog(const char *usec, const char *pid, long self, uint64_t *ms,
                                char *err, size_t errlen)
{
    *ms = 0;
    if (!usec || !*usec)
        return 0;
    if (pid && *pid) {
        char *end;
        errno = 0;
        long p = strtol(pid, &end, 10);
        if (errno || *end || p <= 0) {
            snprintf(err, errlen, "WATCHDOG_PID='%s' is not a process id", pid);
            return LAB_ECONFIG;
        }
        if (p != self) /* meant for another process (a parent that exec'd us without it) */
            return 0;
    }
    char *end;
    errno = 0;
    unsigned long long us = strtoull(usec, &end, 10);
    if (errno || *end || usec[0] == '-' || us == 0) {
        snprintf(err, errlen, "WATCHDOG_USEC='%s' is not a positive number of microseconds", usec);
        return LAB_ECONFIG;
    }
    /* half the period, as sd_watchdog_enabled(3) advises: one late ping is not yet a miss */
    *ms = us / 2000 ? us / 2000 : 1;
    return 0;
}

int lab_sdnotify_open(lab_sdnotify_t *n, char *err, size_t errlen)
{
    memset(n, 0, sizeof *n);
    n->fd = -1;
    const char *v = getenv("NOTIFY_SOCKET");
    if (!v || !*v)
        return 0;
    int rc = lab_sdnotify_parse_addr(v, &n->addr, &n->addrlen, err, errlen);
    if (rc == 0)
        rc = lab_sdnotify_parse_watchdog(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"),
                                         (long)getpid(), &n->watchdog_ms, err, errlen);
    if (rc != 0)
        return rc;
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        snprintf(err, errlen, "cannot make a notify socket: %s", strerror(errno));
        return LAB_EIO;
    }
    return 0;
}

bool lab_sdnotify_on(const lab_sdnotify_t *n)
{
    return n->fd >= 0;
}

int lab_sdnotify_send(lab_sdnotify_t *n, const char *fmt, ...)
{
    if (n->fd < 0)
        return 0;
    char buf[SDN_MAX];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof buf)
        return LAB_ETOOBIG;
    if (sendto(n->fd, buf, (size_t)len, MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
               n->addrlen) != len) {
        /* the first refusal after a success is logged; the rest of the burst is only counted */
        if (n->dropped++ == 0)
            log_warn("sdnotify", "the service manager's socket refused a message: %s",
                     strerror(errno));
        return LAB_EIO;
    }
    n->dropped = 0;
    return 0;
}

/* Fires only while the loop turns: a loop stuck in a callback sends nothing, which is the point. */
static void watchdog_tick(uv_timer_t *t)
{
    lab_sdnotify_t *n = t->data;
    if (lab_sdnotify_send(n, "WATCHDOG=1") == 0)
        n->pings++;
}

int lab_sdnotify_watchdog_start(lab_sdnotify_t *n, uv_loop_t *loop)
{
    if (n->fd < 0 || n->watchdog_ms == 0 || n->timer_open)
        return 0;
    int rc = uv_timer_init(loop, &n->timer);
    if (rc != 0)
        return LAB_EIO;
    n->timer_open = true;
    n->timer.data = n;
    uv_unref((uv_handle_t *)&n->timer);
    watchdog_tick(&n->timer); /* the first ping at once: the manager's clock started at exec */
    return uv_timer_start(&n->timer, watchdog_tick, n->watchdog_ms, n->watchdog_ms) ? LAB_EIO : 0;
}

void lab_sdnotify_close(lab_sdnotify_t *n)
{
    if (n->timer_open) {
        uv_timer_stop(&n->timer);
        uv_close((uv_handle_t *)&n->timer, NULL);
        n->timer_open = false;
    }
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}
