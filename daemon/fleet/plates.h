/* A campaign's plates in the lab's shared queue: the campaign engine's queue hooks (submit a
 * plate run, cancel one) on the fleet's connection, and the ends of plate runs that any cell ran
 * (NOTIFY labloop_run_done, and a look at every plate still waiting after each (re)connect)
 * read from labloop.runs and handed to the campaigns. */
#ifndef LAB_FLEET_PLATES_H
#define LAB_FLEET_PLATES_H

#include "daemon/campaign/engine.h"
#include "daemon/fleet/fleet.h"

typedef struct lab_plates {
    lab_fleet_t *f;
    lab_campaigns_t *l;
    long ends; /* plate run ends read from PostgreSQL */
} lab_plates_t;

/* The hooks for lab_campaigns_start; p->f must be set and outlive the campaigns' use of them. */
void lab_plates_queue(lab_plates_t *p, lab_campaigns_queue_t *out);
/* Follows the ends of runs for the campaigns l (before the fleet's first connect). */
void lab_plates_follow(lab_plates_t *p, lab_campaigns_t *l);

#endif
