/* The plate registry's tables (schemas/sql/sqlite/0006_labware.sql): plates with their newest
 * document, their moves, and the sites that hold a plate nobody named. The writers run inside a
 * store op and append the outbox rows (plate.state, plate.move) in the same op; the readers run
 * on the loop thread's read connection. The registry itself is daemon/labware/labware.c. */
#ifndef LAB_STORE_PLATES_H
#define LAB_STORE_PLATES_H

#include "daemon/store/store.h"

#include <jansson.h>
#include <stdint.h>

/* Inside an op: the plate's document (JSON text) upserted, state and instrument its location's,
 * and a plate.state outbox row with it. */
int lab_plate_write(sqlite3 *db, const char *barcode, const char *doc, const char *state,
                    const char *instrument, int64_t ts_ms);
/* Inside an op: move seq of the plate appended (doc: JSON text) with its plate.move row. */
int lab_plate_move_write(sqlite3 *db, const char *barcode, int seq, const char *doc, int64_t ts_ms);
/* Inside an op: a site's plate of unknown identity recorded (doc: JSON text), or forgotten when
 * doc is NULL. */
int lab_site_hold_write(sqlite3 *db, const char *instrument, int cassette, int slot,
                        const char *doc);

/* Loop thread: every plate's document, each with its newest move's seq as "moves" beside it:
 * [{"doc", "moves"}]; and every held site: [{"instrument", "cassette", "slot", "doc"}]. */
int lab_plates_load(lab_store_t *st, json_t **plates, json_t **holds);

/* Loop thread: the held sites' documents ({instrument, site, why, by?, since}), of instrument
 * only when it is not NULL. */
int lab_site_holds_get(lab_store_t *st, const char *instrument, json_t **out);

typedef struct lab_plates_filter {
    const char *state;      /* a location state, or NULL */
    const char *instrument; /* or NULL */
} lab_plates_filter_t;
/* Loop thread: up to limit plate documents (JSON text, caller frees each and the array) after
 * cursor `after` in the order they were first heard of; *next is the cursor of the next page, 0
 * when this is the last. Returns the count or a negative error. */
int lab_plates_find(lab_store_t *st, const lab_plates_filter_t *f, int64_t after, int limit,
                    char ***docs, int64_t *next);
/* Loop thread: the plate's stored document with its moves in order (at most the newest 1000) as
 * "moves", read in one snapshot; LAB_ENOTFOUND when there is no such plate. */
int lab_plate_get(lab_store_t *st, const char *barcode, json_t **out);

#endif
