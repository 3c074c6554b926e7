/* Harness: throw-away PostgreSQL clusters. initdb in a fresh directory, the postmaster on a unix
 * socket in that directory only, run as the postgres user when the test runs as root (PostgreSQL
 * refuses root). Every cluster started is remembered so atexit can kill and remove what a failing
 * test left behind. */
#include "tests/harness/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define H_PG_MAX 16
#define H_PG_READY_MS 30000

static h_pg_t *h_pg_live[H_PG_MAX];
static bool h_pg_atexit_set;

static void h_pg_cleanup(void)
{
    for (int i = 0; i < H_PG_MAX; i++) {
        h_pg_t *pg = h_pg_live[i];
        if (!pg)
            continue;
        if (pg->pid > 0) {
            kill(pg->pid, SIGKILL);
            waitpid(pg->pid, NULL, 0);
            pg->pid = 0;
        }
        h_rmtree(pg->dir);
        h_pg_live[i] = NULL;
    }
}

static void h_pg_track(h_pg_t *pg, bool on)
{
    if (!h_pg_atexit_set) {
        atexit(h_pg_cleanup);
        h_pg_atexit_set = true;
    }
    for (int i = 0; i < H_PG_MAX; i++) {
        if (on && !h_pg_live[i]) {
            h_pg_live[i] = pg;
            return;
        }
        if (!on && h_pg_live[i] == pg) {
            h_pg_live[i] = NULL;
            return;
        }
    }
}

static const char *h_pg_bindir(void)
{
    static char dir[256];
    if (*dir)
        return dir;
    if (access("/usr/lib/postgresql/15/bin/postgres", X_OK) == 0) {
        snprintf(dir, sizeof dir, "/usr/lib/postgresql/15/bin");
    } else if (h_run("pg_config --bindir 2>/dev/null", dir, sizeof dir) == 0) {
        dir[strcspn(dir, "\n")] = '\0';
    } else {
        snprintf(dir, sizeof dir, "/usr/lib/postgresql/15/bin");
    }
    return dir;
}

/* Forks argv as the postgres user when we are root; output to DIR/log. Returns the pid. */
static pid_t h_pg_spawn(const h_pg_t *pg, char *const argv[], bool deathsig)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (geteuid() == 0 && !pw) {
        fprintf(stderr, "harness: running as root and there is no postgres user\n");
        return -1;
    }
    char logpath[300];
    snprintf(logpath, sizeof logpath, "%s/log", pg->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        if (pw && (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(126);
        /* After setuid, which clears it; and the parent may already be gone. */
        if (deathsig && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
            _exit(125);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int h_pg_wait_ready(h_pg_t *pg)
{
    long long deadline = h_now_ms() + H_PG_READY_MS;
    while (h_now_ms() < deadline) {
        if (PQping(pg->conninfo) == PQPING_OK)
            return 0;
        int st;
        if (waitpid(pg->pid, &st, WNOHANG) == pg->pid) {
            fprintf(stderr, "harness: postgres exited early (see %s/log)\n", pg->dir);
            pg->pid = 0;
            return -1;
        }
        h_sleep_ms(20);
    }
    fprintf(stderr, "harness: postgres not ready after %d ms (see %s/log)\n", H_PG_READY_MS,
            pg->dir);
    return -1;
}

static int h_pg_launch(h_pg_t *pg)
{
    char bin[300], data[300], sock[300], port[16];
    snprintf(bin, sizeof bin, "%s/postgres", h_pg_bindir());
    snprintf(data, sizeof data, "%s/data", pg->dir);
    snprintf(sock, sizeof sock, "unix_socket_directories=%s", pg->dir);
    snprintf(port, sizeof port, "%d", pg->port);
    char *argv[] = {bin,
                    "-D",
                    data,
                    "-p",
                    port,
                    "-c",
                    sock,
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    NULL};
    /* A benchmark's peer is measured durable, as labloop's own store commits */
    const char *durable = getenv("H_PG_DURABLE");
    if (durable && strcmp(durable, "1") == 0)
        argv[9] = NULL;
    pg->pid = h_pg_spawn(pg, argv, true);
    if (pg->pid < 0) {
        pg->pid = 0;
        return -1;
    }
    return h_pg_wait_ready(pg);
}

int h_pg_start(h_pg_t *pg)
{
    memset(pg, 0, sizeof *pg);
    if (h_tempdir("labloop-pg", pg->dir, sizeof pg->dir) != 0)
        return -1;
    h_pg_track(pg, true);
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (pw && chown(pg->dir, pw->pw_uid, pw->pw_gid) != 0) {
        fprintf(stderr, "harness: chown %s: %s\n", pg->dir, strerror(errno));
        goto fail;
    }
    pg->port = h_free_port();
    snprintf(pg->conninfo, sizeof pg->conninfo, "host=%s port=%d dbname=postgres user=postgres",
             pg->dir, pg->port);

    char bin[300], data[300];
    snprintf(bin, sizeof bin, "%s/initdb", h_pg_bindir());
    snprintf(data, sizeof data, "%s/data", pg->dir);
    char *argv[] = {bin,     "-D", data,   "-U",        "postgres",          "-A",
                    "trust", "-E", "UTF8", "--no-sync", "--no-instructions", "--locale=C",
                    NULL};
    pid_t pid = h_pg_spawn(pg, argv, true);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "harness: initdb failed (see %s/log)\n", pg->dir);
        goto fail;
    }
    if (h_pg_launch(pg) != 0)
        goto fail;
    return 0;
fail:
    h_pg_destroy(pg);
    return -1;
}

int h_pg_stop(h_pg_t *pg)
{
    if (pg->pid <= 0)
        return 0;
    /* SIGINT is PostgreSQL's fast shutdown: clients are disconnected, nothing is waited for. */
    kill(pg->pid, SIGINT);
    int st;
    pid_t r;
    while ((r = waitpid(pg->pid, &st, 0)) < 0 && errno == EINTR)
        ;
    pg->pid = 0;
    return r < 0 ? -1 : 0;
}

int h_pg_restart(h_pg_t *pg)
{
    if (pg->pid > 0)
        h_pg_stop(pg);
    return h_pg_launch(pg);
}

void h_pg_destroy(h_pg_t *pg)
{
    if (pg->pid > 0) {
        kill(pg->pid, SIGKILL);
        waitpid(pg->pid, NULL, 0);
        pg->pid = 0;
    }
    if (*pg->dir)
        h_rmtree(pg->dir);
    pg->dir[0] = '\0';
    h_pg_track(pg, false);
}

static void h_pg_quiet(void *arg, const char *message)
{
}

int h_pg_query(h_pg_t *pg, const char *sql, char *out, size_t len)
{
    if (out && len)
        out[0] = '\0';
    PGconn *c = PQconnectdb(pg->conninfo);
    int rc = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: connect: %s", PQerrorMessage(c));
        goto done;
    }
    PQsetNoticeProcessor(c, h_pg_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        fprintf(stderr, "harness: %s: %s", sql, PQresultErrorMessage(r));
    } else {
        if (s == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0 && out && len)
            snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
done:
    PQfinish(c);
    return rc;
}

long long h_pg_count(h_pg_t *pg, const char *sql)
{
    char buf[64];
    if (h_pg_query(pg, sql, buf, sizeof buf) != 0 || !*buf)
        return -1;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return *end ? -1 : v;
}

long long h_pg_count_wait(h_pg_t *pg, const char *sql, long long want, int ms)
{
    long long n = -1;
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50)) {
        n = h_pg_count(pg, sql);
        if (n == want)
            return n;
    }
    return n;
}

long long h_pg_countf(h_pg_t *pg, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return h_pg_count(pg, sql);
}

long long h_pg_count_waitf(h_pg_t *pg, long long want, int ms, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return h_pg_count_wait(pg, sql, want, ms);
}
