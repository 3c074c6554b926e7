/* After a restart: the runs that are not over come back from the store; a step that was in flight
 * is interrupted and its policy applied, except an incubation whose plate is inside, which goes on
 * from its load. */
#include "daemon/sched/sched_int.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void restart_recover(lab_sched_t *s, srun_t *r)
{
    if (!r->wf || r->cur >= r->n)
        return;
    sstep_t *st = &r->st[r->cur];
    if (st->state == LAB_STEP_RUNNING) {
        st->interruptions++;
        lab_driver_t *d = inst_at(s, st->inst);
        if (strcmp(st->op, "incubate") == 0 && st->loaded_ms && !st->unloaded && d) {
            /* the plate is inside since loaded_at: the incubation goes on, the clock with it */
            char err[300];
            program_t *prog = program_build(st->op, d, st->params, st->nominal_s, st->cassette,
                                            st->slot, err, sizeof err);
            if (prog) {
                exec_t *ex = exec_new(s, r, prog);
                if (program_first_wait(prog) < prog->n)
                    ex->pc = program_first_wait(prog);
                log_warn("sched",
                         "run=%s step=%s was in flight at the restart; the plate is in "
                         "%s since its load: the incubation goes on",
                         r->id, st->name, lab_driver_id(d));
                run_persist(s, r, NULL, NULL);
                exec_advance(s, ex);
                return;
            }
        }
        (void)run_step_set(r, st, LAB_STEP_INTERRUPTED); /* from running: the table allows it */
        st->end_ms = now_ms(s);
        snprintf(st->error, sizeof st->error, "interrupted: the daemon stopped while it ran");
        log_warn("sched", "run=%s step=%s was in flight at the restart: interrupted", r->id,
                 st->name);
        sites_release(s, st);
        run_set_state(s, r, LAB_RUN_INTERRUPTED);
        run_persist(s, r, NULL, NULL);
        recovery_apply(s, r, r->cur, true, NULL);
    } else if (r->state == LAB_RUN_INTERRUPTED) {
        recovery_apply(s, r, r->cur, true, NULL);
    }
}

static const char *const live_states[] = {"queued", "planned", "running", "paused", "interrupted"};

void restart_load(lab_sched_t *s)
{
    /* every run not over, in submission order */
    srun_t **loaded = NULL;
    int nloaded = 0;
    for (size_t k = 0; k < sizeof live_states / sizeof *live_states; k++) {
        int64_t after = 0;
        do {
            char **docs = NULL;
            int64_t next = 0;
            int n = lab_runs_list(s->st, live_states[k], after, 500, &docs, &next);
            for (int i = 0; i < n; i++) {
                json_t *doc = json_loads(docs[i], 0, NULL);
                if (json_is_object(doc) && strcmp(live_states[k], "queued") == 0) {
                    queue_admit(s, doc); /* nothing of a queued run is begun: nothing to recover */
                } else if (json_is_object(doc)) {
                    loaded = lab_realloc(loaded, sizeof *loaded * (size_t)(nloaded + 1));
                    loaded[nloaded++] = run_new(s, doc);
                } else {
                    json_decref(doc);
                }
                free(docs[i]);
            }
            free(docs);
            after = next;
            if (n < 0)
                break;
        } while (after);
    }
    s->in_tick = true; /* no timer until everything is loaded */
    for (int i = 0; i < nloaded; i++)
        restart_recover(s, loaded[i]);
    s->in_tick = false;
    free(loaded);
}
