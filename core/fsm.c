/* The state-machine table walk shared by every machine; the tables live beside their model. */
#include "core/fsm.h"
#include "core/err.h"
#include "core/log.h"

#include <string.h>

const lab_fsm_edge_t *lab_fsm_edge(const lab_fsm_t *m, int from, int to)
{
    for (int i = 0; i < m->nedges; i++)
        if (m->edges[i].from == from && m->edges[i].to == to)
            return &m->edges[i];
    return NULL;
}

const char *lab_fsm_state_name(const lab_fsm_t *m, int s)
{
    return s >= 0 && s < m->nstates ? m->states[s] : "?";
}

int lab_fsm_state_parse(const lab_fsm_t *m, const char *name)
{
    for (int i = 0; name && i < m->nstates; i++)
        if (strcmp(m->states[i], name) == 0)
            return i;
    return -1;
}

bool lab_fsm_final(const lab_fsm_t *m, int s)
{
    return s >= 0 && s < m->nstates && (m->final & (1u << s));
}

int lab_fsm_move(const lab_fsm_t *m, int *state, int to, const char *id)
{
    if (to == *state && to >= 0 && to < m->nstates)
        return 0;
    const lab_fsm_edge_t *e = lab_fsm_edge(m, *state, to);
    if (!e) {
        log_error("model", "%s=%s %s -> %s refused: not a transition of the %s state machine",
                  m->name, id ? id : "?", lab_fsm_state_name(m, *state), lab_fsm_state_name(m, to),
                  m->name);
        return LAB_ESTATE;
    }
    log_debug("model", "%s=%s %s -> %s (%s)", m->name, id ? id : "?", m->states[*state],
              m->states[to], e->event);
    *state = to;
    return 0;
}
