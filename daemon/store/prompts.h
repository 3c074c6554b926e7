/* Prompts: what waits for a person (a run paused, an instrument in fault, a manual move), one
 * row per prompt id in the prompts table with its newest document, and a "prompt" outbox row
 * (key: the prompt id) each time one opens or is answered. Ids are stable: run:ID:paused,
 * instrument:ID:fault, move:ID. */
#ifndef LAB_STORE_PROMPTS_H
#define LAB_STORE_PROMPTS_H

#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>

/* Inside an op. Opening (doc has "open": true) stores doc as the prompt's document with
 * "opened_at"; closing merges doc's fields (by, how, reason) into the stored document with
 * "open": false and "closed_at". Either way the outcome is the outbox row's payload. Closing a
 * prompt that is not open, or opening one already open, writes nothing (returns 0). */
int lab_prompt_write(sqlite3 *db, const char *id, const json_t *doc, int64_t ts_ms);

/* The same from the loop thread, as an op of its own (doc borrowed, copied). */
void lab_prompt_submit(lab_store_t *st, const char *id, const json_t *doc, int64_t ts_ms);

/* From the loop thread: closes every open prompt whose id starts with prefix, with how (e.g.
 * "restart": what waited in a daemon that stopped waits no more). */
void lab_prompts_close_prefix(lab_store_t *st, const char *prefix, const char *how, int64_t ts_ms);

/* Loop thread, read connection: the open prompts, newest first, as a JSON array. */
int lab_prompts_open(lab_store_t *st, json_t **out);

#endif
