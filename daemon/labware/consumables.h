/* A liquid handler's consumables: the tips left in its racks and the µL left in each reagent
 * trough, as its [instrument ID] section declares them (drivers/supplies.h). Owns the counts:
 * they follow every tip pick-up and aspirate that ended on the instrument (heard through
 * lab_instr_on_action, the scheduler's and people's alike; an action whose outcome is unknown
 * counts as used), live in the local store (table consumables) and go out as `consumable` outbox
 * rows (PostgreSQL labloop.consumables, MQTT instruments/{id}/consumables retained). The
 * scheduler asks whether a step's program can be served and reserves what a started step takes,
 * so two runs never count on the same µL; a refill an operator reports makes room again. */
#ifndef LAB_LABWARE_CONSUMABLES_H
#define LAB_LABWARE_CONSUMABLES_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/instr/instr.h"
#include "daemon/store/store.h"
#include "drivers/supplies.h" /* the limits a refill is held to */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct lab_consumables lab_consumables_t;

/* Reads the declared consumables of every liquid handler and their stored counts (a handler new
 * to the store starts full), and listens to in's actions. */
int lab_consumables_start(lab_consumables_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                          const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in);
/* Once its store writes are back; cb (may be NULL) after c is freed. Call after the scheduler
 * closed (its steps release what they reserved). */
void lab_consumables_close(lab_consumables_t *c, void (*cb)(void *), void *arg);

/* Whether the instrument declares consumables (the others are never short). */
bool lab_consumables_tracks(lab_consumables_t *c, const char *instrument);
/* Whether instrument can give what a step needs now, net of what steps already under way
 * reserved; when not, why[] says so: "trough substrate: 120 µL left, 480 µL needed" or "tips on
 * hnd: 3 left, 8 needed" (several joined by "; "). volumes_ul: {"reagent": µL}; a reagent
 * without a trough is not counted. */
bool lab_consumables_enough(lab_consumables_t *c, const char *instrument, int tips,
                            const json_t *volumes_ul, char *why, size_t whylen);
/* The same, and when enough, holds it for run until lab_consumables_release (what the run's
 * actions use meanwhile comes off its hold). 0, or LAB_ESTATE with why when short. A run holds
 * one reservation at a time: a new one replaces its old one. */
int lab_consumables_reserve(lab_consumables_t *c, const char *instrument, const char *run, int tips,
                            const json_t *volumes_ul, char *why, size_t whylen);
void lab_consumables_release(lab_consumables_t *c, const char *run);

/* The instrument's document: {"instrument", "tips": {"racks", "per_rack", "total", "left",
 * "reserved"} | null, "troughs": [{"name", "total_ul", "left_ul", "reserved_ul"}], "last"?,
 * "refilled"?, "updated_at"?}; NULL when it declares none. New reference. */
json_t *lab_consumables_doc(lab_consumables_t *c, const char *instrument);

/* What an operator put back: a trough (name) now holding volume_ul (< 0: full), or tips (trough
 * NULL): racks fresh racks (0: every rack full). Applied at once; cb (may be NULL) after the
 * store committed it, with the document. LAB_ENOTFOUND: the instrument declares no
 * consumables; LAB_EINVAL (why in err, the request's member in *member): an unknown trough, a
 * volume over the trough's, more racks than the deck has, tips on a handler without racks. */
typedef void (*lab_consumables_done_cb)(void *arg, int status, json_t *doc);
int lab_consumables_refill(lab_consumables_t *c, const char *instrument, const char *trough,
                           double volume_ul, int racks, const char *by, const char *reason,
                           lab_consumables_done_cb cb, void *arg, char *err, size_t errlen,
                           const char **member);

/* Told after a refill committed (the scheduler re-plans: a waiting run may start). At most 4. */
void lab_consumables_on_change(lab_consumables_t *c, void (*cb)(void *ctx), void *ctx);

#endif
