/* State machines as data: a machine is its state names and one table of allowed transitions,
 * each with the event that causes it. Every machine (run, step, candidate, campaign, campaign
 * plate in daemon/model/; the instrument in drivers/) is such a table beside the code that owns
 * the state, moved only through lab_fsm_move, which refuses what its table does not allow. The
 * type lives in core/ so drivers can use it without depending on the daemon;
 * daemon/model/machines.h lists every machine and tools/state_tables prints them into
 * docs/state-tables.md. */
#ifndef LAB_CORE_FSM_H
#define LAB_CORE_FSM_H

#include <stdbool.h>

typedef struct lab_fsm_edge {
    int from, to;
    const char *event; /* what causes it, in words, for the log and the docs */
} lab_fsm_edge_t;

typedef struct lab_fsm {
    const char *name; /* "run", "step", ... */
    int nstates;
    const char *const *states; /* nstates names */
    const lab_fsm_edge_t *edges;
    int nedges;
    unsigned final; /* bit per state that nothing leaves */
} lab_fsm_t;

/* The edge from -> to, or NULL when the table has none. */
const lab_fsm_edge_t *lab_fsm_edge(const lab_fsm_t *m, int from, int to);
const char *lab_fsm_state_name(const lab_fsm_t *m, int s);
/* -1 when name is not a state of m. */
int lab_fsm_state_parse(const lab_fsm_t *m, const char *name);
bool lab_fsm_final(const lab_fsm_t *m, int s);

/* Moves *state to `to` when the table allows it (to == *state: nothing changes, 0). Otherwise
 * leaves *state as it is, logs the refusal with id and returns LAB_ESTATE. */
int lab_fsm_move(const lab_fsm_t *m, int *state, int to, const char *id);

#endif
