/* labloop-sim as a child process for a test: its config written into a temporary directory, its
 * control socket, faults injected through it, TERM at the end. */
#include "tests/harness/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

int h_sim_start(h_sim_t *s, const char *ini_text)
{
    return h_sim_start_args(s, ini_text, NULL);
}

int h_sim_start_args(h_sim_t *s, const char *ini_text, const char *const *args)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    if (h_tempdir("labsim", s->dir, sizeof s->dir))
        return -1;
    snprintf(s->ini, sizeof s->ini, "%s/labloop.ini", s->dir);
    snprintf(s->ctl, sizeof s->ctl, "%s/ctl.sock", s->dir);
    FILE *f = fopen(s->ini, "w");
    if (!f || fputs(ini_text, f) < 0 || fclose(f)) {
        fprintf(stderr, "h_sim_start: cannot write %s\n", s->ini);
        return -1;
    }
    const char *bin = getenv("LABLOOP_SIM");
    if (!bin) {
        fprintf(stderr, "h_sim_start: LABLOOP_SIM is not set\n");
        return -1;
    }
    char log[600];
    snprintf(log, sizeof log, "%s/sim.log", s->dir);
    pid_t parent = getpid();
    s->pid = fork();
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        if (!getenv("H_VERBOSE") && !freopen(log, "a", stderr))
            _exit(127);
        const char *argv[40] = {bin, "-c", s->ini, "--control", s->ctl};
        int n = 5;
        for (int i = 0; args && args[i] && n < 39; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    struct stat st;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(10)) {
        if (lstat(s->ctl, &st) == 0)
            return 0;
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            fprintf(stderr, "h_sim_start: labloop-sim exited (status %d); see %s\n", status, log);
            s->pid = -1;
            return -1;
        }
    }
    fprintf(stderr, "h_sim_start: no control socket after 10 s; see %s\n", log);
    return -1;
}

int h_sim_ctl(h_sim_t *s, char *reply, size_t cap, const char *fmt, ...)
{
    char req[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(req, sizeof req - 1, fmt, ap);
    va_end(ap);
    req[n++] = '\n';
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(s->ctl) >= sizeof a.sun_path) {
        fprintf(stderr, "h_sim_ctl: socket path too long: %s\n", s->ctl);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    memcpy(a.sun_path, s->ctl, strlen(s->ctl) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        write(fd, req, (size_t)n) != n) {
        fprintf(stderr, "h_sim_ctl: %s: %s\n", s->ctl, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t got = 0;
    long long end = h_now_ms() + 10000;
    while (got + 1 < cap && h_now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, reply + got, 1);
        if (r <= 0)
            break;
        if (reply[got++] == '\n')
            break;
    }
    reply[got] = '\0';
    close(fd);
    if (!strstr(reply, "\"ok\":true")) {
        fprintf(stderr, "h_sim_ctl: %.*s -> %s\n", n - 1, req, reply);
        return -1;
    }
    return 0;
}

int h_sim_fault(h_sim_t *s, const char *id, const char *fault, double seconds)
{
    char reply[512];
    return h_sim_ctl(s, reply, sizeof reply,
                     "{\"instrument\":\"%s\",\"fault\":\"%s\",\"seconds\":%g}", id, fault, seconds);
}

int h_sim_fault_at(h_sim_t *s, const char *id, const char *fault, double seconds, int at_command)
{
    char reply[512];
    return h_sim_ctl(s, reply, sizeof reply,
                     "{\"instrument\":\"%s\",\"fault\":\"%s\",\"seconds\":%g,"
                     "\"at_command\":%d}",
                     id, fault, seconds, at_command);
}

int h_sim_log_count(const h_sim_t *s, const char *needle)
{
    char path[320];
    struct stat st;
    snprintf(path, sizeof path, "%s/sim.log", s->dir);
    /* A log that is gone counts nothing ever again: a test waiting for a count must hear it. */
    if (stat(path, &st) != 0) {
        fprintf(stderr, "h_sim_log_count: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return h_file_count(path, needle);
}

int h_sim_wait_exit(h_sim_t *s, int ms)
{
    int status;
    if (s->pid <= 0)
        return s->status;
    for (long long end = h_now_ms() + ms;; h_sleep_ms(10)) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = -1;
            s->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            return s->status;
        }
        if (h_now_ms() >= end)
            return -2;
    }
}

int h_sim_stop(h_sim_t *s)
{
    int rc = s->status;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        rc = h_sim_wait_exit(s, 5000);
        if (rc == -2) {
            int status;
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            rc = -1;
        }
        s->pid = -1;
    }
    if (s->dir[0] && !getenv("H_KEEP"))
        h_rmtree(s->dir);
    s->dir[0] = '\0';
    return rc;
}

int h_tty_open(const char *path, int ms)
{
    struct stat st;
    long long end = h_now_ms() + ms;
    while (lstat(path, &st) != 0) {
        if (h_now_ms() >= end) {
            fprintf(stderr, "h_tty_open: no %s after %d ms\n", path, ms);
            return -1;
        }
        h_sleep_ms(10);
    }
    int fd = open(path, O_RDWR | O_NOCTTY);
    struct termios t;
    if (fd < 0 || tcgetattr(fd, &t) != 0) {
        fprintf(stderr, "h_tty_open: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
    return fd;
}

int h_read_exact(int fd, void *buf, size_t n, int ms)
{
    size_t got = 0;
    long long end = h_now_ms() + ms;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        long long left = end - h_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return (int)got;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return (int)got;
        got += (size_t)r;
    }
    return (int)got;
}
