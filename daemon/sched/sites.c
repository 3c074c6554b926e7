/* The instruments as the scheduler sees them (lookup by id, availability, which ones a step's
 * "on" names) and their sites: which incubator slots are taken, given out and released. A site
 * is free when neither a step of ours nor the plate registry holds it (a plate loaded by hand,
 * one whose whereabouts are in doubt). */
#include "daemon/sched/sched_int.h"

#include <string.h>

int inst_index(lab_sched_t *s, const char *id)
{
    for (int i = 0; id && i < ninst(s); i++)
        if (strcmp(lab_driver_id(lab_instr_at(s->in, i)), id) == 0)
            return i;
    return -1;
}

bool inst_available(lab_sched_t *s, int i)
{
    lab_driver_t *d = inst_at(s, i);
    if (!d)
        return false;
    lab_inst_state_t st = lab_driver_state(d);
    return st == LAB_INST_IDLE || st == LAB_INST_BUSY;
}

bool inst_matches(lab_sched_t *s, int i, const char *on)
{
    lab_driver_t *d = inst_at(s, i);
    return d && (strcmp(lab_driver_id(d), on) == 0 || strcmp(lab_driver_ops(d)->kind, on) == 0);
}

static int sites_capacity(lab_sched_t *s, int i)
{
    return s->site_n[i];
}

bool sites_take(lab_sched_t *s, int i, int *cassette, int *slot)
{
    lab_driver_t *d = inst_at(s, i);
    for (int x = 0; x < sites_capacity(s, i); x++)
        if (!s->site_used[i][x] && lab_driver_site_at(d, x, cassette, slot) &&
            !lab_labware_site_busy(s->lw, lab_driver_id(d), *cassette, *slot)) {
            s->site_used[i][x] = 1;
            return true;
        }
    return false;
}

void sites_mark(lab_sched_t *s, int i, int cassette, int slot, unsigned char used)
{
    if (i < 0 || cassette <= 0 || slot <= 0)
        return;
    int x = lab_driver_site_index(inst_at(s, i), cassette, slot);
    if (x >= 0 && x < sites_capacity(s, i))
        s->site_used[i][x] = used;
}

void sites_release(lab_sched_t *s, sstep_t *st)
{
    if (st->holds_site && (!st->loaded_ms || st->unloaded)) {
        sites_mark(s, st->inst, st->cassette, st->slot, 0);
        st->holds_site = false;
    }
}
