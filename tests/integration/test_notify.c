/* labloopd under a service manager: this test stands in for systemd on $NOTIFY_SOCKET (an abstract
 * socket, as systemd >= 254 may hand out, and a path) and checks what sd_notify(3) promises the
 * manager: READY=1 only once the API answers, WATCHDOG=1 at half of $WATCHDOG_USEC, RELOADING=1
 * then READY=1 around SIGHUP, STOPPING=1 first on SIGTERM, and a clean exit. A $NOTIFY_SOCKET the
 * daemon cannot use stops the start with a message naming it. */
#include "core/sdnotify.h"
#include "tests/harness/harness.h"

#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct mgr {
    int fd;
    char *msgs[4096];
    int n;
} mgr_t;

static void mgr_bind(mgr_t *m, const char *name)
{
    struct sockaddr_un a;
    socklen_t len;
    char err[256];
    memset(m, 0, sizeof *m);
    assert_int_equal(lab_sdnotify_parse_addr(name, &a, &len, err, sizeof err), 0);
    m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(m->fd >= 0);
    assert_int_equal(bind(m->fd, (struct sockaddr *)&a, len), 0);
}

/* Takes every datagram waiting, waiting up to ms for the first. */
static void mgr_read(mgr_t *m, int ms)
{
    struct pollfd p = {m->fd, POLLIN, 0};
    while (poll(&p, 1, ms) > 0 && m->n < (int)(sizeof m->msgs / sizeof m->msgs[0])) {
        char buf[4096];
        ssize_t r = recv(m->fd, buf, sizeof buf - 1, 0);
        if (r < 0)
            break;
        buf[r] = '\0';
        m->msgs[m->n++] = strdup(buf);
        ms = 0;
    }
}

/* The index of the first message at or after from that has the line `line`, or -1. */
static int mgr_find(const mgr_t *m, int from, const char *line)
{
    size_t l = strlen(line);
    for (int i = from; i < m->n; i++)
        for (const char *p = m->msgs[i]; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
            if (strncmp(p, line, l) == 0 && (p[l] == '\n' || p[l] == '\0'))
                return i;
    return -1;
}

static int mgr_count(const mgr_t *m, int from, const char *line)
{
    int c = 0;
    for (int i = mgr_find(m, from, line); i >= 0; i = mgr_find(m, i + 1, line))
        c++;
    return c;
}

/* Waits up to ms for `count` messages with `line` at or after from; the index of the last. */
static int mgr_wait(mgr_t *m, int from, const char *line, int count, int ms)
{
    long long deadline = h_now_ms() + ms;
    while (mgr_count(m, from, line) < count && h_now_ms() < deadline)
        mgr_read(m, 100);
    int i = -1;
    for (int k = 0; k < count; k++) {
        i = mgr_find(m, i + 1 > from ? i + 1 : from, line);
        if (i < 0) {
            fprintf(stderr, "no %d x '%s' after message %d; the manager got:\n", count, line, from);
            for (int j = 0; j < m->n; j++)
                fprintf(stderr, "  [%d] %s\n", j, m->msgs[j]);
            fail();
        }
    }
    return i;
}

static void mgr_close(mgr_t *m)
{
    close(m->fd);
    for (int i = 0; i < m->n; i++)
        free(m->msgs[i]);
}

static void lifecycle(const char *name)
{
    mgr_t m;
    mgr_bind(&m, name);
    setenv("NOTIFY_SOCKET", name, 1);
    setenv("WATCHDOG_USEC", "400000", 1); /* a ping every 200 ms */
    h_daemon_t d;
    int started = h_daemon_start(&d, NULL, NULL, "[instrument mover1]\ndriver = manual-mover\n");
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(started, 0);

    /* /healthz answered, so READY=1 is already waiting: it is sent before the loop serves */
    mgr_read(&m, 0);
    int ready = mgr_find(&m, 0, "READY=1");
    assert_true(ready >= 0);
    assert_true(strstr(m.msgs[ready], "STATUS=ready: http=") != NULL);
    assert_true(strstr(m.msgs[ready], "instruments=1") != NULL);
    assert_true(mgr_find(&m, 0, "STATUS=starting: opening the local store in ") < ready);
    assert_true(mgr_find(&m, 0, "STOPPING=1") < 0);

    /* pings come on their own while the daemon idles */
    mgr_wait(&m, ready, "WATCHDOG=1", 3, 20000);

    /* SIGHUP: RELOADING=1, then READY=1 again */
    int from = m.n;
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    int reloading = mgr_wait(&m, from, "RELOADING=1", 1, 20000);
    assert_true(strstr(m.msgs[reloading], "MONOTONIC_USEC=") != NULL);
    int again = mgr_wait(&m, reloading + 1, "READY=1", 1, 20000);
    assert_true(strstr(m.msgs[again], "STATUS=ready; config reloaded") != NULL);

    /* a reload the config refuses: the running config stays, and so does READY */
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s.good' && echo 'no_such_key = 1' >> '%s'", d.conf, d.conf,
             d.conf);
    assert_int_equal(h_run(cmd, NULL, 0), 0);
    from = m.n;
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    reloading = mgr_wait(&m, from, "RELOADING=1", 1, 20000);
    again = mgr_wait(&m, reloading + 1, "READY=1", 1, 20000);
    assert_true(strstr(m.msgs[again], "STATUS=ready; reload refused: 1 error") != NULL);
    snprintf(cmd, sizeof cmd, "mv '%s.good' '%s'", d.conf, d.conf);
    assert_int_equal(h_run(cmd, NULL, 0), 0);

    /* SIGTERM: STOPPING=1 before anything else of the stop, then a clean exit */
    from = m.n;
    assert_int_equal(h_daemon_stop(&d), 0);
    mgr_read(&m, 1000);
    int stopping = mgr_find(&m, from, "STOPPING=1");
    assert_true(stopping >= 0);
    int closing = mgr_find(&m, from, "STATUS=stopping: closing the local store");
    assert_true(closing > stopping);
    assert_true(mgr_find(&m, from, "STATUS=stopped") > closing);
    assert_true(mgr_find(&m, from, "READY=1") < 0);

    /* A NOTIFY_SOCKET it cannot use: no start, and the log says which variable */
    snprintf(cmd, sizeof cmd, "NOTIFY_SOCKET=relative.sock '%s' -c '%s' 2>&1", getenv("LABLOOPD"),
             d.conf);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "NOTIFY_SOCKET='relative.sock'"));
    h_daemon_destroy(&d);
    mgr_close(&m);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@labloop-test-notify-%d", (int)getpid());
    lifecycle(name);
}

static void test_path_socket(void **state)
{
    (void)state;
    char dir[256], path[300];
    assert_int_equal(h_tempdir("notify", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/notify.sock", dir);
    lifecycle(path);
    h_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_path_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
