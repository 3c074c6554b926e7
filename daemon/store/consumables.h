/* The consumables table: one row per liquid handler with its newest consumables document, and a
 * `consumable` outbox row (key: the instrument id) with each change. What the document holds is
 * daemon/labware/consumables.c's. */
#ifndef LAB_STORE_CONSUMABLES_H
#define LAB_STORE_CONSUMABLES_H

#include "daemon/store/store.h"

#include <jansson.h>

/* Inside an op: stores doc as the instrument's and appends its outbox row. */
int lab_store_consumable_write(sqlite3 *db, const char *instrument, const json_t *doc,
                               int64_t ts_ms);

/* The same from the loop thread as an op of its own (doc copied); done (may be NULL) runs on the
 * loop thread after the commit with 0 or a negative lab error. */
typedef void (*lab_store_consumable_cb)(void *arg, int status);
void lab_store_consumable_submit(lab_store_t *st, const char *instrument, const json_t *doc,
                                 int64_t ts_ms, lab_store_consumable_cb done, void *arg);

/* Loop thread, read connection: {instrument: doc} of every stored row. */
int lab_store_consumables_load(lab_store_t *st, json_t **out);

#endif
