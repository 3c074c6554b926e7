/* The cell's instruments: one driver per [instrument ID] section, created at start. Owns the
 * instruments' latest telemetry, turns every state change and telemetry sample into outbox rows
 * (instrument.state, instrument.telemetry: PostgreSQL labloop.instruments/telemetry, MQTT
 * instruments/{id}/state retained and .../telemetry), and hands reports from
 * in/instruments/{id}/report to the instrument they name. The daemon talks to drivers through
 * here; drivers never see the store or the bus. */
#ifndef LAB_INSTR_INSTR_H
#define LAB_INSTR_INSTR_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/bus/mqtt.h"
#include "daemon/store/store.h"
#include "drivers/driver.h"

#include <jansson.h>
#include <uv.h>

typedef struct lab_instr lab_instr_t;

/* Every [instrument ID] section against its driver's key table; problems appended to errs.
 * Returns how many. */
int lab_instr_check(const lab_config_t *cfg, lab_cfg_errors_t *errs);
/* Every instrument's recording file as a start would judge it (lab_wirerec_check_path, nothing
 * made): one that cannot be written is a warning appended to warns, not an error, since the
 * instrument then runs without recording. Returns how many. */
int lab_instr_check_record(const lab_config_t *cfg, lab_cfg_errors_t *warns);
/* The driver key tables, for labloopd --keys. */
void lab_instr_print_keys(FILE *out);

/* Creates and starts every instrument. mqtt may be NULL (no reports then). */
int lab_instr_start(lab_instr_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st,
                    lab_mqtt_t *mqtt, const lab_clock_t *clock);
/* The same with drivers outside the registry (a test's own, NULL-terminated), found by their
 * name before the registry is asked. */
int lab_instr_start_with(lab_instr_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                         lab_store_t *st, lab_mqtt_t *mqtt, const lab_clock_t *clock,
                         const lab_driver_ops_t *const *extra);
/* Closes every instrument (operations end ECANCELLED); cb after the last one is freed. */
void lab_instr_close(lab_instr_t *in, void (*cb)(void *arg), void *arg);

/* One listener (the scheduler) told of every instrument state change, after its outbox row. */
typedef void (*lab_instr_state_cb)(void *ctx, lab_driver_t *d, lab_inst_state_t state);
void lab_instr_on_state(lab_instr_t *in, lab_instr_state_cb cb, void *ctx);

int lab_instr_count(const lab_instr_t *in);
lab_driver_t *lab_instr_at(lab_instr_t *in, int i);
lab_driver_t *lab_instr_find(lab_instr_t *in, const char *id, size_t len);
/* The operator's hold on an instrument (lab_driver_pause) with who did it and, for a pause, an
 * optional reason; the state document carries them (paused_by, pause_reason, paused_at while
 * held; resumed_by, resumed_at after) and the change is an instrument.state row. */
int lab_instr_hold(lab_instr_t *in, lab_driver_t *d, bool paused, const char *by,
                   const char *reason);
/* A person asked the instrument for an action (by: who): while one of its prompts is open (a
 * fault, a manual move), that person and action answer it when it closes. */
void lab_instr_note_action(lab_instr_t *in, lab_driver_t *d, const char *by, const char *action);
/* Who an action is for: the plate it handles, the run, and who asked. */
typedef struct lab_instr_who {
    const char *plate; /* the plate's barcode; NULL when it handles none or none is known */
    const char *run;   /* the run's id; NULL for a manual action */
    const char *by;    /* the person (the token's name), or "scheduler" */
} lab_instr_who_t;

/* Every action on an instrument goes through here, the scheduler's and the API's alike: it is
 * queued as lab_driver_call does (refused at once the same way, and then no listener hears of
 * it), the action listeners are told when it is queued and when it ends, and cb runs after
 * them. who may be NULL (nobody known); its strings are copied. */
int lab_instr_call(lab_instr_t *in, lab_driver_t *d, const char *action, json_t *params,
                   double timeout_s, const lab_instr_who_t *who, lab_drv_done_cb cb, void *arg,
                   lab_drv_error_t *err, json_t **problems);

/* An action as its listeners see it; everything borrowed for the call. */
typedef struct lab_instr_act {
    lab_driver_t *d;
    const char *action;
    json_t *params;             /* as queued */
    bool ended;                 /* false: just queued; true: ended (err, result) */
    const lab_drv_error_t *err; /* when ended; code LAB_OK on success */
    json_t *result;             /* when ended with success, else NULL */
    const lab_instr_who_t *who; /* never NULL; its members may be */
} lab_instr_act_t;
typedef void (*lab_instr_action_cb)(void *ctx, const lab_instr_act_t *act);
/* Adds an action listener (at most LAB_INSTR_ACTION_LISTENERS); LAB_EFULL when full. */
#define LAB_INSTR_ACTION_LISTENERS 4
int lab_instr_on_action(lab_instr_t *in, lab_instr_action_cb cb, void *ctx);
/* Whether the driver's action has the role in its roles table. */
bool lab_instr_action_is(const lab_driver_t *d, const char *action, lab_drv_role_t role);

/* Lab seconds the instrument spent in each state (indexed by lab_inst_state_t) since the
 * daemon started, the current state's time until now included. */
void lab_instr_state_seconds(lab_instr_t *in, lab_driver_t *d, double out[LAB_INST_NSTATES]);

/* The instrument's document: id, kind, driver, model, label, capacity, state, last_error,
 * telemetry (values, units, ts), info; with detail, the actions with their parameter schemas. */
json_t *lab_instr_doc(lab_instr_t *in, lab_driver_t *d, bool detail);

#endif
