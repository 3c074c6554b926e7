/* The benchmarks' smoke check: runs one benchmark at a tiny size and checks what it prints, not
 * how fast: it exits 0, every line of its stdout is a JSON object naming its "bench" with at
 * least one number, and each figure asked for is a number on some line. No time is asserted.
 *
 *   check_lines FIGURE[,FIGURE...] -- PROGRAM [ARG...] */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what, const char *line)
{
    fprintf(stderr, "check_lines: %s%s%s\n", what, line ? ": " : "", line ? line : "");
    return 1;
}

static bool has_number(const json_t *o)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)o, k, v) if (json_is_number(v)) return true;
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 4 || strcmp(argv[2], "--") != 0)
        return fail("usage: check_lines FIGURE[,FIGURE...] -- PROGRAM [ARG...]", NULL);
    char *want = strdup(argv[1]);
    char *figs[64];
    int nfigs = 0, found[64] = {0};
    for (char *t = strtok(want, ","); t && nfigs < 64; t = strtok(NULL, ","))
        figs[nfigs++] = t;

    int fd[2];
    if (pipe(fd) != 0)
        return fail("pipe", NULL);
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork", NULL);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[3], argv + 3);
        perror(argv[3]);
        _exit(127);
    }
    close(fd[1]);
    FILE *in = fdopen(fd[0], "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int bad = 0, lines = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        fputs(line, stdout); /* the figures stay visible in the test's output */
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        lines++;
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        if (!json_is_object(o))
            bad |= fail("not a JSON object", line);
        else if (!json_is_string(json_object_get(o, "bench")))
            bad |= fail("no \"bench\" name", line);
        else if (!has_number(o) && !json_is_string(json_object_get(o, "skipped")))
            bad |= fail("no figure", line);
        for (int i = 0; i < nfigs && json_is_object(o); i++)
            found[i] |= json_is_number(json_object_get(o, figs[i]));
        json_decref(o);
    }
    free(line);
    fclose(in);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bad |= fail("the benchmark did not exit 0", NULL);
    if (lines == 0)
        bad |= fail("no output", NULL);
    for (int i = 0; i < nfigs; i++)
        if (!found[i])
            bad |= fail("missing figure", figs[i]);
    free(want);
    return bad;
}
