/* The plate registry: every plate the cell has heard of (barcode, format, labware type), where
 * it is (at an instrument and site, outside, in transit, or unknown with why), what was
 * dispensed into it, its runs and its moves; and the sites that hold a plate nobody named. It
 * learns only from the actions the instruments carry out (lab_instr_on_action): a load, unload
 * or move is stored as in transit when it is queued and where it ended when it ends, in the
 * same store op as its outbox rows (plate.state, plate.move), so a daemon killed between the
 * two finds the plate in transit, never silently at its old place. An action whose outcome is
 * unknown leaves the plate unknown, its site busy and a prompt open until a person says where it
 * is (lab_labware_locate). On start, instruments that can sense their sites (an INVENTORY role)
 * are asked, and what they say is reconciled with the registry. */
#ifndef LAB_LABWARE_LABWARE_H
#define LAB_LABWARE_LABWARE_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/instr/instr.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

typedef struct lab_labware lab_labware_t;

/* Loads the registry from the store, settles what a stopped daemon left in transit, asks every
 * instrument with an INVENTORY role for its sites and listens to every action from then on. */
int lab_labware_start(lab_labware_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                      const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in);
/* Stops learning: what instruments answer from now on (their operations end ECANCELLED as they
 * close) is not taken as what happened to the plates; a plate in transit stays so in the store
 * and the next start settles it. Call before the instruments close. */
void lab_labware_stop(lab_labware_t *lw);
/* Frees everything once its store ops are back; cb on the loop thread after. Call after the
 * instruments closed (no listener call may follow). */
void lab_labware_close(lab_labware_t *lw, void (*cb)(void *), void *arg);

/* A site holds a plate as far as the registry knows (a known plate, or one of unknown
 * identity a person loaded, or a site whose state is in doubt): the scheduler never
 * gives it to another plate. */
bool lab_labware_site_busy(lab_labware_t *lw, const char *instrument, int cassette, int slot);
/* Told after every committed change of the registry (a manual load frees or takes a site). At
 * most 4. */
void lab_labware_on_change(lab_labware_t *lw, void (*cb)(void *ctx), void *ctx);
/* The plate's document (new reference), or NULL when the registry has no such plate. */
json_t *lab_labware_plate(lab_labware_t *lw, const char *barcode);

/* The end of a person's request: 0 and the plate's document after the change (borrowed for the
 * call), or a negative error. */
typedef void (*lab_labware_done_cb)(void *arg, int status, const json_t *doc);
/* A person says where the plate is: at instrument (site: cassette, slot > 0; 0, 0 for none) or,
 * with instrument NULL, outside the cell; reason and by go into the move and the plate's
 * location. format (0: unchanged) and labware (NULL: unchanged) describe the plate. Settles an
 * unknown location and answers its prompt. LAB_ENOTFOUND: no such plate; LAB_ENOTFOUND with
 * msg: no such instrument or site; LAB_ECONFLICT (msg says why): the site holds another plate.
 * cb runs after the change committed. */
int lab_labware_locate(lab_labware_t *lw, const char *barcode, const char *instrument, int cassette,
                       int slot, int format, const char *labware, const char *reason,
                       const char *by, lab_labware_done_cb cb, void *arg, char *msg, size_t msglen);

/* Whether text may be a barcode: well-formed UTF-8 without control characters, 1 to
 * LAB_RUN_PLATE_CHARS characters. NULL when it may, else why not. */
const char *lab_labware_barcode_check(const char *text, size_t len);

#endif
