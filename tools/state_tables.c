/* Prints every state machine (daemon/model/, drivers/inst_state.c) as Markdown:
 * docs/state-tables.md is its output. With --check FILE it compares instead and fails when FILE
 * differs, so the docs cannot drift from the tables the daemon enforces. */
#include "daemon/model/machines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_state_list(FILE *f, const lab_fsm_t *m, bool final)
{
    const char *sep = "";
    for (int s = 0; s < m->nstates; s++) {
        if (final && !lab_fsm_final(m, s))
            continue;
        fprintf(f, "%s`%s`", sep, m->states[s]);
        sep = ", ";
    }
    if (!*sep)
        fputs("none", f);
}

static void print_tables(FILE *f)
{
    fputs("# State tables\n\n"
          "Generated from the tables in `daemon/model/` and `drivers/inst_state.c` by\n"
          "`tools/state_tables.c`; do not edit. Regenerate with\n"
          "`build/tools/state_tables > docs/state-tables.md`; the test\n"
          "`docs.state_tables` fails while this file and the code differ. Each machine has one\n"
          "setter that refuses (error and log line) any move not in its table; a move to the\n"
          "state it is in changes nothing.\n",
          f);
    for (int i = 0; i < lab_fsm_count; i++) {
        const lab_fsm_t *m = lab_fsm_all[i];
        fprintf(f, "\n## %s\n\nStates: ", m->name);
        print_state_list(f, m, false);
        fputs(". Final: ", f);
        print_state_list(f, m, true);
        fputs(".\n\n| from | to | event |\n|---|---|---|\n", f);
        for (int e = 0; e < m->nedges; e++)
            fprintf(f, "| %s | %s | %s |\n", m->states[m->edges[e].from], m->states[m->edges[e].to],
                    m->edges[e].event);
    }
}

static int check(const char *path)
{
    char *want = NULL, *have = NULL;
    size_t wantlen = 0, havelen = 0;
    int rc = 1;
    FILE *mem = open_memstream(&want, &wantlen);
    if (!mem)
        goto fail;
    print_tables(mem);
    fclose(mem);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "state_tables: cannot open %s\n", path);
        goto fail;
    }
    FILE *got = open_memstream(&have, &havelen);
    int c;
    while (got && (c = fgetc(f)) != EOF)
        fputc(c, got);
    fclose(f);
    if (!got)
        goto fail;
    fclose(got);
    if (wantlen != havelen || memcmp(want, have, wantlen) != 0) {
        fprintf(stderr,
                "state_tables: %s differs from the state tables; regenerate it with "
                "state_tables > %s\n",
                path, path);
        goto fail;
    }
    rc = 0;
fail:
    free(want);
    free(have);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--check") == 0)
        return check(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: state_tables [--check FILE]\n");
        return 2;
    }
    print_tables(stdout);
    return 0;
}
