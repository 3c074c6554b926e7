/* core/sdnotify: $NOTIFY_SOCKET and $WATCHDOG_USEC read as sd_notify(3) and sd_watchdog_enabled(3)
 * define them (systemd's man pages, sections "Environment" and "Notes"), datagrams received by a
 * real socket in both namespaces, and the watchdog pinging only while the loop turns. */
#include "core/err.h"
#include "core/sdnotify.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

static void test_parse_addr(void **state)
{
    (void)state;
    struct sockaddr_un a;
    socklen_t len;
    char err[256];
    assert_int_equal(lab_sdnotify_parse_addr("/run/systemd/notify", &a, &len, err, sizeof err), 0);
    assert_string_equal(a.sun_path, "/run/systemd/notify");
    assert_int_equal(len,
                     offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
    /* '@' is the abstract namespace: a leading NUL, and the length (no NUL) ends the name */
    assert_int_equal(lab_sdnotify_parse_addr("@lab/notify", &a, &len, err, sizeof err), 0);
    assert_int_equal(a.sun_path[0], '\0');
    assert_memory_equal(a.sun_path + 1, "lab/notify", 10);
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 11);
    const char *bad[] = {"", "relative/sock", "@", "vsock:2:1234"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(lab_sdnotify_parse_addr(bad[i], &a, &len, err, sizeof err), LAB_ECONFIG);
        assert_true(strstr(err, "NOTIFY_SOCKET") != NULL);
    }
    /* longest that fits: a path keeps room for its NUL, an abstract name does not need it */
    char v[sizeof a.sun_path + 2];
    memset(v, 'x', sizeof v);
    v[0] = '/';
    v[sizeof a.sun_path - 1] = '\0';
    assert_int_equal(lab_sdnotify_parse_addr(v, &a, &len, err, sizeof err), 0);
    v[sizeof a.sun_path - 1] = 'x';
    v[sizeof a.sun_path] = '\0';
    assert_int_equal(lab_sdnotify_parse_addr(v, &a, &len, err, sizeof err), LAB_ECONFIG);
    v[0] = '@';
    assert_int_equal(lab_sdnotify_parse_addr(v, &a, &len, err, sizeof err), 0);
    assert_int_equal(len, sizeof a);
    v[sizeof a.sun_path] = 'x';
    v[sizeof a.sun_path + 1] = '\0';
    assert_int_equal(lab_sdnotify_parse_addr(v, &a, &len, err, sizeof err), LAB_ECONFIG);
}

static void test_parse_watchdog(void **state)
{
    (void)state;
    uint64_t ms = 99;
    char err[256];
    assert_int_equal(lab_sdnotify_parse_watchdog(NULL, NULL, 42, &ms, err, sizeof err), 0);
    assert_int_equal(ms, 0);
    /* half the period */
    assert_int_equal(lab_sdnotify_parse_watchdog("30000000", NULL, 42, &ms, err, sizeof err), 0);
    assert_int_equal(ms, 15000);
    assert_int_equal(lab_sdnotify_parse_watchdog("30000000", "42", 42, &ms, err, sizeof err), 0);
    assert_int_equal(ms, 15000);
    /* below 2 ms the period is still a ping every millisecond, not none */
    assert_int_equal(lab_sdnotify_parse_watchdog("1", NULL, 42, &ms, err, sizeof err), 0);
    assert_int_equal(ms, 1);
    /* WATCHDOG_PID of another process: the watchdog is not ours */
    assert_int_equal(lab_sdnotify_parse_watchdog("30000000", "41", 42, &ms, err, sizeof err), 0);
    assert_int_equal(ms, 0);
    const char *bad_usec[] = {"0", "-5", "10s", "x", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad_usec / sizeof bad_usec[0]; i++) {
        err[0] = '\0';
        assert_int_equal(lab_sdnotify_parse_watchdog(bad_usec[i], NULL, 42, &ms, err, sizeof err),
                         LAB_ECONFIG);
        assert_true(strstr(err, "WATCHDOG_USEC") != NULL);
    }
    assert_int_equal(lab_sdnotify_parse_watchdog("30000000", "4x", 42, &ms, err, sizeof err),
                     LAB_ECONFIG);
    assert_true(strstr(err, "WATCHDOG_PID") != NULL);
}

/* A listener bound where NOTIFY_SOCKET will point, as the service manager would be. */
static int listener(const char *name)
{
    struct sockaddr_un a;
    socklen_t len;
    char err[256];
    assert_int_equal(lab_sdnotify_parse_addr(name, &a, &len, err, sizeof err), 0);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    if (name[0] == '/')
        unlink(name);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    return fd;
}

/* The next datagram, or "" when none is waiting. */
static const char *next_msg(int fd)
{
    static char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_unset_is_silent(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "garbage", 1); /* not read when there is no socket */
    lab_sdnotify_t n;
    char err[256];
    assert_int_equal(lab_sdnotify_open(&n, err, sizeof err), 0);
    assert_false(lab_sdnotify_on(&n));
    assert_int_equal(lab_sdnotify_send(&n, "READY=1"), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(lab_sdnotify_watchdog_start(&n, &loop), 0);
    lab_sdnotify_close(&n);
    assert_int_equal(uv_loop_close(&loop), 0); /* no timer was made */
    unsetenv("WATCHDOG_USEC");
}

static void send_and_receive(const char *name)
{
    int fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    unsetenv("WATCHDOG_USEC");
    lab_sdnotify_t n;
    char err[256];
    assert_int_equal(lab_sdnotify_open(&n, err, sizeof err), 0);
    assert_true(lab_sdnotify_on(&n));
    assert_int_equal(lab_sdnotify_send(&n, "READY=1\nSTATUS=ready: instruments=%d", 3), 0);
    assert_string_equal(next_msg(fd), "READY=1\nSTATUS=ready: instruments=3");
    /* more than one datagram holds: refused whole, nothing half sent */
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(lab_sdnotify_send(&n, "STATUS=%s", big), LAB_ETOOBIG);
    assert_string_equal(next_msg(fd), "");
    /* the manager gone: an error, never a blocked or killed caller (SIGPIPE) */
    close(fd);
    if (name[0] == '/')
        unlink(name);
    assert_int_equal(lab_sdnotify_send(&n, "STOPPING=1"), LAB_EIO);
    lab_sdnotify_close(&n);
    unsetenv("NOTIFY_SOCKET");
}

static void test_send_path(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/sdnotify-%d.sock", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    send_and_receive(path);
}

static void test_send_abstract(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@labloop-test-sdnotify-%d", (int)getpid());
    send_and_receive(name);
}

static void test_bad_env_refused(void **state)
{
    (void)state;
    lab_sdnotify_t n;
    char err[256];
    setenv("NOTIFY_SOCKET", "notify.sock", 1);
    assert_int_equal(lab_sdnotify_open(&n, err, sizeof err), LAB_ECONFIG);
    setenv("NOTIFY_SOCKET", "@labloop-test", 1);
    setenv("WATCHDOG_USEC", "soon", 1);
    assert_int_equal(lab_sdnotify_open(&n, err, sizeof err), LAB_ECONFIG);
    assert_true(strstr(err, "WATCHDOG_USEC") != NULL);
    unsetenv("WATCHDOG_USEC");
    unsetenv("NOTIFY_SOCKET");
}

typedef struct watch {
    int fd;
    int pings;
} watch_t;

static void count_pings(uv_timer_t *t)
{
    watch_t *w = t->data;
    for (const char *m; *(m = next_msg(w->fd));)
        w->pings += strcmp(m, "WATCHDOG=1") == 0;
    if (w->pings >= 3)
        uv_timer_stop(t);
}

static void test_watchdog_pings_while_the_loop_turns(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@labloop-test-watchdog-%d", (int)getpid());
    int fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    setenv("WATCHDOG_USEC", "20000", 1); /* a ping every 10 ms */
    lab_sdnotify_t n;
    char err[256];
    assert_int_equal(lab_sdnotify_open(&n, err, sizeof err), 0);
    assert_int_equal(n.watchdog_ms, 10);
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(lab_sdnotify_watchdog_start(&n, &loop), 0);
    /* the pings' timer alone does not hold the loop */
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    watch_t w = {fd, 0};
    uv_timer_t check;
    uv_timer_init(&loop, &check);
    check.data = &w;
    uv_timer_start(&check, count_pings, 5, 5);
    uv_run(&loop, UV_RUN_DEFAULT); /* until three pings arrived */
    assert_true(w.pings >= 3);
    assert_true(n.pings >= (unsigned long long)w.pings);
    /* a loop that does not turn sends nothing: what the manager's watchdog catches */
    while (*next_msg(fd))
        ;
    usleep(50 * 1000);
    assert_string_equal(next_msg(fd), "");
    lab_sdnotify_close(&n);
    uv_close((uv_handle_t *)&check, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(fd);
    unsetenv("WATCHDOG_USEC");
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_parse_watchdog),
        cmocka_unit_test(test_unset_is_silent),
        cmocka_unit_test(test_send_path),
        cmocka_unit_test(test_send_abstract),
        cmocka_unit_test(test_bad_env_refused),
        cmocka_unit_test(test_watchdog_pings_while_the_loop_turns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
