/* Harness utilities: free ports, temporary directories, clocks, commands. */
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One port the kernel offers for loopback. */
static int port_offered(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The kernel may offer a port again as soon as its socket is closed, so a caller taking several
 * before any is bound (twenty controllers for one labloop-sim) could get one twice: the ports
 * handed out lately are remembered and not handed out again. */
int h_free_port(void)
{
    enum { RECENT = 256 };
    static int recent[RECENT], next;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    int port = -1;
    for (int tries = 0; tries < 100 && port < 0; tries++) {
        port = port_offered();
        for (int i = 0; port > 0 && i < RECENT; i++)
            if (recent[i] == port)
                port = -1;
    }
    if (port > 0) {
        recent[next] = port;
        next = (next + 1) % RECENT;
    }
    pthread_mutex_unlock(&lock);
    return port;
}

int h_file_count(const char *path, const char *needle)
{
    char line[2048];
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

int h_tempdir(const char *prefix, char *out, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    if (!mkdtemp(out)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", out, strerror(errno));
        return -1;
    }
    chmod(out, 0755);
    return 0;
}

void h_rmtree(const char *path)
{
    if (!path || !*path || strcmp(path, "/") == 0)
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not remove %s\n", path);
}

long long h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int h_run(const char *cmd, char *out, size_t len)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t got = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && got + 1 < len) {
            size_t take = n < len - 1 - got ? n : len - 1 - got;
            memcpy(out + got, buf, take);
            got += take;
        }
    }
    if (out && len)
        out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
