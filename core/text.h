/* Text fields: their limits, taken from the JSON Schemas (maxLength counts characters, i.e. code
 * points), and the UTF-8 helpers that keep every copy of such a text whole. A buffer that holds a
 * field is LAB_TEXT_BYTES(its characters) long; text composed into a fixed buffer is cut on a
 * character boundary, never inside one. docs/design.md has the table of fields. */
#ifndef LAB_CORE_TEXT_H
#define LAB_CORE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes to hold n characters of any UTF-8 text and its NUL. */
#define LAB_TEXT_BYTES(n) ((n)*4 + 1)

/* maxLength of the schemas' text fields, in characters (tests/unit/test_text.c checks each
 * against its schema). */
#define LAB_RUN_WORKFLOW_CHARS 128 /* run.workflow, workflow.name: ASCII by their pattern */
#define LAB_RUN_PLATE_CHARS 64     /* run.plate */
#define LAB_RUN_NAME_CHARS 200     /* run.name */
#define LAB_RUN_NOTE_CHARS 2000    /* run.note */
#define LAB_STEP_NAME_CHARS 64     /* workflow steps[].name: ASCII by its pattern */
#define LAB_STEP_OP_CHARS 64       /* workflow steps[].op */
#define LAB_STEP_ON_CHARS 64       /* workflow steps[].on */
#define LAB_ACTION_CHARS 64        /* action.action */
#define LAB_INSTRUMENT_ID_CHARS 64 /* [instrument ID] (ASCII), a step's `on` when it names one */
#define LAB_CAMPAIGN_ID_CHARS 58   /* campaign.id (ASCII): its plates {id}-P0001 are plates */
#define LAB_REAGENT_CHARS 31       /* campaign parameters[].reagent, choices[]; a STAR's reagents */
#define LAB_CANCEL_REASON_CHARS 500 /* POST /v1/runs/{id}/cancel {"reason"} (checked in runs.c) */

/* The byte length of the longest prefix of s that is at most max bytes and ends on a character
 * boundary (s is valid UTF-8, NUL-terminated). */
size_t lab_text_fit(const char *s, size_t max);
/* s into dst[cap], cut on a character boundary when it does not fit. */
void lab_text_copy(char *dst, size_t cap, const char *s);
/* Drops a character left incomplete at the end of s (what snprintf's truncation leaves). */
void lab_text_trim(char *s);
/* len bytes of s are well-formed UTF-8 (no overlong form, surrogate, or code point past
 * U+10FFFF) and hold no NUL. */
bool lab_text_valid(const char *s, size_t len);
/* Characters (code points) in len bytes of well-formed UTF-8. */
size_t lab_text_chars(const char *s, size_t len);

#endif
