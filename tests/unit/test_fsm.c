/* The state machines of daemon/model/ and drivers/ as tables: each setter accepts exactly the
 * moves its table lists and refuses every other pair (LAB_ESTATE, state unchanged); the tables
 * themselves are sound (named states, no duplicate rows, nothing leaves a final state, every state
 * reachable from the first); and the facts the design relies on hold (a failed step may be
 * retried). */
#include "core/err.h"
#include "daemon/model/campaign_states.h"
#include "daemon/model/candidate_states.h"
#include "daemon/model/machines.h"
#include "daemon/model/plate_states.h"
#include "daemon/model/run_states.h"
#include "daemon/model/step_states.h"
#include "drivers/driver.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* The typed setter of each machine, called through one signature so one walk covers them all. */
static int set_run(int *state, int to)
{
    lab_run_state_t s = (lab_run_state_t)*state;
    int rc = lab_run_set_state(&s, (lab_run_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static int set_step(int *state, int to)
{
    lab_step_state_t s = (lab_step_state_t)*state;
    int rc = lab_step_set_state(&s, (lab_step_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static int set_cand(int *state, int to)
{
    lab_cand_state_t s = (lab_cand_state_t)*state;
    int rc = lab_cand_set_state(&s, (lab_cand_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static int set_camp(int *state, int to)
{
    lab_camp_state_t s = (lab_camp_state_t)*state;
    int rc = lab_camp_set_state(&s, (lab_camp_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static int set_plate(int *state, int to)
{
    lab_plate_state_t s = (lab_plate_state_t)*state;
    int rc = lab_plate_set_state(&s, (lab_plate_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static int set_inst(int *state, int to)
{
    lab_inst_state_t s = (lab_inst_state_t)*state;
    int rc = lab_inst_set_state(&s, (lab_inst_state_t)to, "test");
    *state = (int)s;
    return rc;
}

static const struct {
    const lab_fsm_t *m;
    int (*set)(int *state, int to);
} machines[] = {
    {&lab_run_fsm, set_run},   {&lab_step_fsm, set_step},   {&lab_cand_fsm, set_cand},
    {&lab_camp_fsm, set_camp}, {&lab_plate_fsm, set_plate}, {&lab_inst_fsm, set_inst},
};

static void test_every_machine_listed(void **state)
{
    (void)state;
    assert_int_equal(lab_fsm_count, (int)(sizeof machines / sizeof machines[0]));
    for (int i = 0; i < lab_fsm_count; i++)
        assert_ptr_equal(lab_fsm_all[i], machines[i].m);
}

/* Every pair: allowed moves are made, every other one refused with the state left alone. */
static void test_walk_every_pair(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof machines / sizeof machines[0]; i++) {
        const lab_fsm_t *m = machines[i].m;
        int accepted = 0;
        for (int from = 0; from < m->nstates; from++)
            for (int to = 0; to < m->nstates; to++) {
                int s = from;
                int rc = machines[i].set(&s, to);
                if (from == to) {
                    assert_int_equal(rc, 0);
                    assert_int_equal(s, from);
                } else if (lab_fsm_edge(m, from, to)) {
                    assert_int_equal(rc, 0);
                    assert_int_equal(s, to);
                    accepted++;
                } else {
                    assert_int_equal(rc, LAB_ESTATE);
                    assert_int_equal(s, from);
                }
                /* the generic walk agrees with the typed setter */
                int g = from;
                assert_int_equal(lab_fsm_move(m, &g, to, "test"), rc);
                assert_int_equal(g, s);
            }
        assert_int_equal(accepted, m->nedges);
        /* a state outside the machine is refused, never indexed */
        int s = 0;
        assert_int_equal(machines[i].set(&s, m->nstates), LAB_ESTATE);
        assert_int_equal(machines[i].set(&s, -1), LAB_ESTATE);
        assert_int_equal(s, 0);
    }
}

static void test_tables_sound(void **state)
{
    (void)state;
    for (int i = 0; i < lab_fsm_count; i++) {
        const lab_fsm_t *m = lab_fsm_all[i];
        assert_true(m->nstates > 1 && m->nstates <= 32);
        for (int s = 0; s < m->nstates; s++) {
            assert_non_null(m->states[s]);
            assert_int_equal(lab_fsm_state_parse(m, m->states[s]), s);
            assert_string_equal(lab_fsm_state_name(m, s), m->states[s]);
        }
        assert_int_equal(lab_fsm_state_parse(m, "no such state"), -1);
        assert_int_equal(lab_fsm_state_parse(m, NULL), -1);
        unsigned reach = 1u, out = 0;
        for (int e = 0; e < m->nedges; e++) {
            const lab_fsm_edge_t *x = &m->edges[e];
            assert_true(x->from >= 0 && x->from < m->nstates);
            assert_true(x->to >= 0 && x->to < m->nstates);
            assert_int_not_equal(x->from, x->to);
            assert_non_null(x->event);
            assert_true(strlen(x->event) > 0);
            assert_ptr_equal(lab_fsm_edge(m, x->from, x->to), x); /* no second row */
            assert_false(lab_fsm_final(m, x->from));
            out |= 1u << x->from;
        }
        for (int pass = 0; pass < m->nstates; pass++)
            for (int e = 0; e < m->nedges; e++)
                if (reach & (1u << m->edges[e].from))
                    reach |= 1u << m->edges[e].to;
        for (int s = 0; s < m->nstates; s++) {
            assert_true(reach & (1u << s));                        /* reachable from the first */
            assert_true(lab_fsm_final(m, s) || (out & (1u << s))); /* no dead end but a final */
        }
    }
}

/* What the scheduler and the design rely on, written out rather than read from the tables. */
static void test_known_facts(void **state)
{
    (void)state;
    assert_true(lab_run_state_final(LAB_RUN_DONE));
    assert_true(lab_run_state_final(LAB_RUN_FAILED));
    assert_true(lab_run_state_final(LAB_RUN_CANCELLED));
    assert_false(lab_run_state_final(LAB_RUN_PAUSED));
    lab_run_state_t r = LAB_RUN_DONE;
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_RUNNING, "r1"), LAB_ESTATE);
    assert_int_equal(r, LAB_RUN_DONE);
    r = LAB_RUN_QUEUED;
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_DONE, "r1"), LAB_ESTATE);
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_PLANNED, "r1"), 0);
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_RUNNING, "r1"), 0);
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_INTERRUPTED, "r1"), 0);
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_PAUSED, "r1"), 0);
    assert_int_equal(lab_run_set_state(&r, LAB_RUN_QUEUED, "r1"), 0);

    /* a failed or interrupted step is retried or skipped, so it is not final */
    assert_false(lab_step_state_final(LAB_STEP_FAILED));
    assert_false(lab_step_state_final(LAB_STEP_INTERRUPTED));
    assert_true(lab_step_state_final(LAB_STEP_DONE));
    assert_true(lab_step_state_final(LAB_STEP_SKIPPED));
    lab_step_state_t s = LAB_STEP_PENDING;
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_DONE, "r1/a"), LAB_ESTATE);
    assert_int_equal(s, LAB_STEP_PENDING);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_RUNNING, "r1/a"), 0);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_FAILED, "r1/a"), 0);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_PENDING, "r1/a"), 0);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_RUNNING, "r1/a"), 0);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_DONE, "r1/a"), 0);
    assert_int_equal(lab_step_set_state(&s, LAB_STEP_PENDING, "r1/a"), LAB_ESTATE);
    assert_int_equal(s, LAB_STEP_DONE);

    /* a failed candidate may be retried (docs/design.md, State machines): not final, but settled
     * for its batch */
    assert_false(lab_cand_state_final(LAB_CAND_FAILED));
    assert_true(lab_cand_state_settled(LAB_CAND_FAILED));
    assert_true(lab_cand_state_settled(LAB_CAND_STALE));
    assert_false(lab_cand_state_settled(LAB_CAND_STAGED));
    lab_cand_state_t k = LAB_CAND_FAILED;
    assert_int_equal(lab_cand_set_state(&k, LAB_CAND_CANDIDATE, "c/k"), 0);
    k = LAB_CAND_COMPLETED;
    assert_int_equal(lab_cand_set_state(&k, LAB_CAND_CANDIDATE, "c/k"), LAB_ESTATE);
    k = LAB_CAND_CANDIDATE;
    assert_int_equal(lab_cand_set_state(&k, LAB_CAND_RUNNING, "c/k"), LAB_ESTATE);
    assert_int_equal(k, LAB_CAND_CANDIDATE);
    assert_int_equal(lab_cand_state_parse("abandoned"), LAB_CAND_ABANDONED);

    /* a done campaign stays done; a paused one may still finish */
    lab_camp_state_t c = LAB_CAMP_DONE;
    assert_int_equal(lab_camp_set_state(&c, LAB_CAMP_ACTIVE, "c"), LAB_ESTATE);
    assert_int_equal(lab_camp_set_state(&c, LAB_CAMP_PAUSED, "c"), LAB_ESTATE);
    assert_int_equal(c, LAB_CAMP_DONE);
    c = LAB_CAMP_PAUSED;
    assert_int_equal(lab_camp_set_state(&c, LAB_CAMP_DONE, "c"), 0);
    assert_int_equal(lab_camp_state_parse("paused"), LAB_CAMP_PAUSED);
    assert_int_equal(lab_camp_state_parse("Paused"), -1);

    /* a relaid plate's run is no longer the loop's, and it never runs again for it */
    assert_true(lab_plate_state_live(LAB_PLATE_STAGED));
    assert_true(lab_plate_state_live(LAB_PLATE_RUNNING));
    assert_false(lab_plate_state_live(LAB_PLATE_RELAID));
    lab_plate_state_t p = LAB_PLATE_RELAID;
    assert_int_equal(lab_plate_set_state(&p, LAB_PLATE_RUNNING, "c/P1"), LAB_ESTATE);
    assert_int_equal(lab_plate_set_state(&p, LAB_PLATE_OVER, "c/P1"), 0);

    /* the instrument's state names are on the wire (status topic, API); it starts offline, can
     * always go offline, and nothing it does is final */
    const char *wire[] = {"offline", "idle", "busy", "paused", "fault"};
    for (int i = 0; i < LAB_INST_NSTATES; i++) {
        assert_string_equal(lab_inst_state_name((lab_inst_state_t)i), wire[i]);
        assert_false(lab_fsm_final(&lab_inst_fsm, i));
        if (i != LAB_INST_OFFLINE)
            assert_non_null(lab_fsm_edge(&lab_inst_fsm, i, LAB_INST_OFFLINE));
    }
    assert_string_equal(lab_inst_state_name(LAB_INST_NSTATES), "?");
    lab_inst_state_t in = LAB_INST_OFFLINE;
    assert_int_equal(lab_inst_set_state(&in, LAB_INST_IDLE, "i1"), 0);
    assert_int_equal(lab_inst_set_state(&in, LAB_INST_BUSY, "i1"), 0);
    assert_int_equal(lab_inst_set_state(&in, LAB_INST_NSTATES, "i1"), LAB_ESTATE);
    assert_int_equal(in, LAB_INST_BUSY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_machine_listed),
        cmocka_unit_test(test_walk_every_pair),
        cmocka_unit_test(test_tables_sound),
        cmocka_unit_test(test_known_facts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
