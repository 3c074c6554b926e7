/* The instrument driver interface. A driver is a struct of function pointers (lab_driver_ops_t)
 * with a lifecycle (open/start/stop/close), a kind, a config key table, and a table of actions
 * whose parameters are JSON Schema documents. The framework (driver.c) owns what every driver
 * shares: checking the [instrument ID] section against the driver's key table, validating
 * action parameters, one queue of operations per instrument (serial instruments are
 * half-duplex, and one stuck instrument holds only its own queue), per-operation timeouts,
 * telemetry polling, the instrument's state and its last error. Drivers run on the loop thread
 * and never block it; they report through the host callbacks the daemon gives them and never
 * touch the store, the bus or the scheduler. */
#ifndef LAB_DRIVERS_DRIVER_H
#define LAB_DRIVERS_DRIVER_H

#include "core/err.h"
#include "core/fsm.h"
#include "drivers/transport/transport.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The instrument states (docs/state-tables.md). A driver reports offline, idle and fault; the
 * framework adds busy (an operation running) and paused (an operator held the queue). */
typedef enum lab_inst_state {
    LAB_INST_OFFLINE = 0, /* not connected (yet, or any more); reconnecting by itself */
    LAB_INST_IDLE,
    LAB_INST_BUSY,
    LAB_INST_PAUSED,
    LAB_INST_FAULT, /* connected, but the device reports a condition that needs a person */
    LAB_INST_NSTATES
} lab_inst_state_t;

/* The instrument state machine (drivers/inst_state.c): its table and its one setter, which the
 * framework's publishing goes through. LAB_ESTATE (and a log line) for a move the table refuses,
 * *state unchanged; id names the instrument in the log. */
extern const lab_fsm_t lab_inst_fsm;
const char *lab_inst_state_name(lab_inst_state_t s);
int lab_inst_set_state(lab_inst_state_t *state, lab_inst_state_t to, const char *id);

/* An instrument's error: code is one of core/err.h's (LAB_ETIMEDOUT, LAB_EDEVICE, ...), and JSON
 * shows its stable name (lab_err_json_name: "timeout", "device_error"); the device's own code and
 * text are kept beside it. The codes drivers use: ENOACTION (no such action), EINVAL (parameters
 * refused; nothing was sent), EOFFLINE (not connected), ETIMEDOUT (no complete answer in time),
 * EDEVICE (the device reported an error: device_code, text), EPROTO (the device answered
 * something that is not the protocol), ESTATE (not possible now: paused, fault, nothing to
 * confirm, slot in use), EBUSY (the instrument's queue is full), ECANCELLED (the instrument
 * stopped before the operation finished), EINTERNAL. */
typedef struct lab_drv_error {
    int code;             /* LAB_OK, or a negative lab_error */
    char device_code[32]; /* the device's own: "E1", "er01/30", "00007", "exception 2", or "" */
    char text[256];       /* what happened, with the device's own text when it gave one */
    /* How far a failed operation got, as far as the driver can prove it: true only when nothing
     * of it reached the device (refused before a byte was sent, or still queued), so repeating
     * it cannot do anything twice. false (the default) is "it may have started": a command was
     * sent and its reply was lost, garbled or an error. */
    bool not_started;
} lab_drv_error_t;

/* Fills e (code, device_code may be NULL; not_started false) and returns it; text is
 * printf-formatted. */
lab_drv_error_t *lab_drv_error_set(lab_drv_error_t *e, int code, const char *device_code,
                                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* {"code": name, "device_code"?: ..., "message": text} */
json_t *lab_drv_error_json(const lab_drv_error_t *e);

/* ---- config keys ---- */

typedef enum lab_drv_key_type {
    LAB_DRV_KEY_STR,
    LAB_DRV_KEY_INT,
    LAB_DRV_KEY_DOUBLE,
    LAB_DRV_KEY_ENUM, /* one of choices, "a|b|c" */
} lab_drv_key_type_t;

enum { LAB_DRV_KEY_REQUIRED = 1 };

typedef struct lab_drv_key {
    const char *name;
    lab_drv_key_type_t type;
    const char *def; /* NULL: no default */
    double min, max; /* numbers */
    const char *choices;
    unsigned flags;
    const char *help;
} lab_drv_key_t;

/* Serial settings with a model's documented defaults, for a driver's key table. */
#define LAB_DRV_SERIAL_KEYS(baud, bits, parity, stop, flow)                                        \
    {"port",                                                                                       \
     LAB_DRV_KEY_STR,                                                                              \
     NULL,                                                                                         \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     LAB_DRV_KEY_REQUIRED,                                                                         \
     "device path, tcp://HOST:PORT for a serial device server, or usb://VVVV:PPPP[?serial=S] "     \
     "for a USB bulk device (vendor and product id in hex)"},                                      \
        {"baud", LAB_DRV_KEY_INT, baud, 50, 4000000, NULL, 0, "bits per second"},                  \
        {"data_bits", LAB_DRV_KEY_INT, bits, 5, 8, NULL, 0, "data bits"},                          \
        {"parity", LAB_DRV_KEY_ENUM, parity, 0, 0, "none|even|odd", 0, "parity"},                  \
        {"stop_bits", LAB_DRV_KEY_INT, stop, 1, 2, NULL, 0, "stop bits"},                          \
    {                                                                                              \
        "flow", LAB_DRV_KEY_ENUM, flow, 0, 0, "none|rtscts|xonxoff", 0, "flow control"             \
    }

/* ---- actions ---- */

enum {
    /* Runs at once, beside a queued operation (confirm a manual move, read a cached value). */
    LAB_DRV_ACT_IMMEDIATE = 1,
    /* Allowed while offline (a driver with no connection, or one that reports cached state). */
    LAB_DRV_ACT_OFFLINE = 2,
    /* Refused (ESTATE, not started) while the instrument is in fault: an action whose effect
     * must not be left in doubt (a heater's set point) waits until the device answers again. */
    LAB_DRV_ACT_NOT_IN_FAULT = 4,
    /* Its params' "by" says who did it (a manual move's confirm): the API writes the caller's
     * token name there; what the request says is kept only when the daemon has no tokens. */
    LAB_DRV_ACT_BY = 8,
};

typedef struct lab_drv_action {
    const char *name;
    /* JSON Schema (core/jschema.h subset) of "params"; NULL: an empty object only. */
    const char *params_schema;
    double timeout_s; /* lab seconds, the default per-operation timeout */
    unsigned flags;
    const char *help;
} lab_drv_action_t;

/* What an action does for a workflow step: the scheduler builds a step's program from the roles
 * a driver gives its actions, never from their names. An action may have several roles, and a
 * role several actions (READ: each action whose result's "values" are measurements). */
typedef enum lab_drv_role {
    LAB_DRV_ROLE_NONE = 0,
    LAB_DRV_ROLE_LOAD,         /* a plate into a site: params {cassette, slot} */
    LAB_DRV_ROLE_UNLOAD,       /* the plate out of its site: params {cassette, slot} */
    LAB_DRV_ROLE_SET_TEMP,     /* params {temperature_c} */
    LAB_DRV_ROLE_RUN,          /* hold the set condition (a heater on) until STOP */
    LAB_DRV_ROLE_STOP,         /* no params */
    LAB_DRV_ROLE_PICK_UP_TIPS, /* params {channels} */
    LAB_DRV_ROLE_DROP_TIPS,    /* no params */
    LAB_DRV_ROLE_ASPIRATE,     /* params {reagent, volume_ul (a number, or one per channel)} */
    LAB_DRV_ROLE_DISPENSE,     /* params {well, volume_ul (likewise)} */
    LAB_DRV_ROLE_MOVE_PLATE,   /* params {plate, from, to}: instrument ids */
    LAB_DRV_ROLE_READ,         /* the result's "values" object holds one value per well */
    /* Which sites hold a plate, as far as the device can tell: no params; the result's "sites"
     * is [{cassette, slot, occupied}] for every site it knows about (those it cannot sense are
     * left out). */
    LAB_DRV_ROLE_INVENTORY,
    /* Read the barcode of the plate in front of the reader: no params; the result's "barcode"
     * is the text read, or null when the device answered that it could not read a label. */
    LAB_DRV_ROLE_SCAN,
    /* How many fresh tips the racks hold as the daemon counts them (params {left}): a driver that
     * tracks tip positions takes its next one from it, after a refill and at every start, and
     * refuses a pick-up the count cannot serve. No result. */
    LAB_DRV_ROLE_TIPS_LEFT,
} lab_drv_role_t;

typedef struct lab_drv_role_action {
    lab_drv_role_t role;
    const char *action; /* a name of the driver's action table */
} lab_drv_role_action_t;

/* ---- the driver ---- */

typedef struct lab_driver lab_driver_t;
struct lab_jerrs;    /* core/jschema.h */
struct lab_drv_conf; /* below */

typedef struct lab_driver_ops {
    const char *name;                /* the config's driver = value: "liconic-stx" */
    const char *kind;                /* "incubator", "plate_reader", "liquid_handler", ... */
    const char *model;               /* "Liconic STX", for people */
    const lab_drv_key_t *keys;       /* the section's keys besides driver and the common ones */
    const lab_drv_action_t *actions; /* terminated by an entry whose name is NULL */
    /* The roles of its actions in a workflow step, terminated by LAB_DRV_ROLE_NONE; NULL: none
     * (its actions are then only called by a step whose op names one). */
    const lab_drv_role_action_t *roles;
    /* The action the framework runs every poll_s when the queue is idle; its result object is
     * telemetry. NULL: no polling (a driver that reports by itself calls lab_drv_telemetry). */
    const char *poll_action;
    double poll_default_s;
    size_t priv_size; /* lab_drv_priv(d) is zeroed memory of this size */

    /* Read the keys (lab_drv_str/int/...), prepare transports, connect nothing yet. 0, or a
     * negative lab_error (LAB_EINVAL for a value it cannot use) that refuses the instrument with
     * err. */
    int (*open)(lab_driver_t *d, char *err, size_t errlen);
    /* Start connecting; report with lab_drv_set_state. */
    void (*start)(lab_driver_t *d);
    /* Drop the connection and any protocol state; no lab_drv_done afterwards. */
    void (*stop)(lab_driver_t *d);
    /* Release everything; call lab_drv_closed(d) once the last handle closed (may be inside). */
    void (*close)(lab_driver_t *d);
    /* Start an operation. params were validated against the schema. The driver ends it with
     * lab_drv_done (never from inside invoke). An IMMEDIATE action may call it from inside. */
    void (*invoke)(lab_driver_t *d, const lab_drv_action_t *a, json_t *params);
    /* The operation in progress timed out: forget it (a late reply is then unsolicited) and
     * resynchronise if the protocol needs it. Its lab_drv_done must not come any more. */
    void (*abort)(lab_driver_t *d);
    /* Optional: checks of params that depend on this instrument's config (a slot past the
     * cassette, wells outside the plate), run after the schema: each problem appended with
     * lab_jerrs_add(errs, "/wells", ...) (paths inside params). Any problem refuses the call
     * with EINVAL before anything is queued. */
    void (*check)(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                  struct lab_jerrs *errs);
    /* Optional: a document the instrument pushed (mqtt-report). 0, or LAB_EINVAL with err. */
    int (*feed)(lab_driver_t *d, const char *doc, size_t len, char *err, size_t errlen);
    /* Optional: the instrument's sites, the places inside it that hold a plate between a load
     * and an unload (an incubator's slots), as the slot count of each cassette: slots[c - 1]
     * for cassette c, at most max cassettes; returns how many. Asked once, right after open.
     * NULL: the instrument has no sites, and no step is given one on it. */
    int (*sites)(lab_driver_t *d, int *slots, int max);
    /* Optional: what the key table cannot say (two keys that exclude each other, a list, a sum
     * against capacity), run by lab_driver_check once every key passed, so --check refuses what
     * open would: 0, or LAB_EINVAL with the key concerned in *key and why in err (values with
     * lab_drv_conf_str). */
    int (*check_conf)(const struct lab_drv_conf *conf, const char **key, char *err, size_t errlen);
} lab_driver_ops_t;

/* The registry: every shipped driver, NULL-terminated. */
extern const lab_driver_ops_t *const lab_drivers[];
const lab_driver_ops_t *lab_driver_find(const char *name);

/* Keys every instrument takes, whatever its driver. */
extern const lab_drv_key_t lab_drv_common_keys[];

/* ---- the daemon's side ---- */

/* One key = value of an [instrument ID] section, with its line for errors. */
typedef struct lab_drv_kv {
    const char *key, *value;
    int line;
} lab_drv_kv_t;

struct lab_clock;

typedef struct lab_drv_conf {
    const char *id;
    int line; /* of the [instrument ID] header */
    const lab_drv_kv_t *kv;
    size_t n;
    double time_scale;
    /* Where the wire recording goes when the section gives no record = (DIR/ID.wire); NULL: no
     * recording unless record = PATH. */
    const char *record_dir;
    const struct lab_clock *clock; /* the lab clock for recordings; NULL: the wall clock */
} lab_drv_conf_t;

/* The value a section gives the key, or NULL when it gives none; no default. */
const char *lab_drv_conf_str(const lab_drv_conf_t *conf, const char *key);

/* Called for each problem found in a section. */
typedef void (*lab_drv_conf_err_cb)(void *ctx, int line, const char *key, const char *reason);

/* Checks a section against the common keys and its driver's table: driver known, keys known
 * (sim_* keys belong to labloop-sim and are skipped), values typed and in range, required keys
 * present. Returns the number of problems. */
int lab_driver_check(const lab_drv_conf_t *conf, lab_drv_conf_err_cb cb, void *ctx);

typedef struct lab_drv_host {
    /* Every change of state (and of the last error while in fault/offline). */
    void (*on_state)(void *ctx, lab_driver_t *d, lab_inst_state_t state,
                     const lab_drv_error_t *last_error);
    /* A telemetry sample: an object of named numbers ("temperature_c": 37.0); borrowed. */
    void (*on_telemetry)(void *ctx, lab_driver_t *d, int64_t ts_ms, json_t *values);
    void *ctx;
} lab_drv_host_t;

/* Creates an instrument from a checked section (lab_driver_check first) and opens it. */
int lab_driver_new(uv_loop_t *loop, const lab_drv_conf_t *conf, const lab_drv_host_t *host,
                   lab_driver_t **out, char *err, size_t errlen);
/* The same with the ops given rather than looked up by the section's driver = name (a driver
 * outside the registry, such as a test's). */
int lab_driver_new_ops(uv_loop_t *loop, const lab_driver_ops_t *ops, const lab_drv_conf_t *conf,
                       const lab_drv_host_t *host, lab_driver_t **out, char *err, size_t errlen);
void lab_driver_start(lab_driver_t *d);
/* Pending operations complete with ECANCELLED; the driver disconnects; no callback follows.
 * cb (may be NULL) runs on the loop thread once everything is released and d freed. */
void lab_driver_close(lab_driver_t *d, void (*cb)(void *arg), void *arg);

/* An operation's end. result (an object) is borrowed for the call; err->code is LAB_OK on
 * success. Never called from inside lab_driver_call. */
typedef void (*lab_drv_done_cb)(lab_driver_t *d, const lab_drv_error_t *err, json_t *result,
                                void *arg);

/* Queues an action: 0, or refused at once with err filled and err->code returned (and, for
 * EINVAL, one {path, message} per problem appended to *problems when given): unknown action, bad
 * params, offline, in fault, closing, queue full. timeout_s 0 takes the action's default. params
 * are borrowed (NULL means {}). */
int lab_driver_call(lab_driver_t *d, const char *action, json_t *params, double timeout_s,
                    lab_drv_done_cb cb, void *arg, lab_drv_error_t *err, json_t **problems);

/* Operator hold: queued operations wait (the running one finishes); immediate actions still run. */
void lab_driver_pause(lab_driver_t *d, bool paused);

const char *lab_driver_id(const lab_driver_t *d);
const lab_driver_ops_t *lab_driver_ops(const lab_driver_t *d);
lab_inst_state_t lab_driver_state(const lab_driver_t *d);
/* The last error (code LAB_OK if none since start). */
const lab_drv_error_t *lab_driver_last_error(const lab_driver_t *d);
/* Model information the driver learned (firmware version, serial number): an object, borrowed. */
json_t *lab_driver_info(const lab_driver_t *d);
/* Hands the driver a pushed document (mqtt-report); LAB_ENOACTION if it takes none. */
int lab_driver_feed(lab_driver_t *d, const char *doc, size_t len, char *err, size_t errlen);
/* What the scheduler asks an instrument about its room. Capacity: plates it holds at once (the
 * capacity key). Sites: the places a plate can be put (ops->sites), numbered 0 .. n - 1 cassette
 * by cassette; a driver without the op has none. An instrument with sites is refused at open
 * when capacity is more than its sites. */
int lab_driver_capacity(const lab_driver_t *d);
int lab_driver_sites(const lab_driver_t *d);
/* Site x as (cassette, slot), both from 1; false when x is not a site. */
bool lab_driver_site_at(const lab_driver_t *d, int x, int *cassette, int *slot);
/* The site number of (cassette, slot), or -1 when the instrument has no such site. */
int lab_driver_site_index(const lab_driver_t *d, int cassette, int slot);

/* Figures: operations done, failed, timed out; queue length. */
typedef struct lab_driver_stats {
    uint64_t ops, failed, timeouts, polls;
    int queued;
} lab_driver_stats_t;
void lab_driver_stats(const lab_driver_t *d, lab_driver_stats_t *out);

/* The file an instrument records to (malloc'd; NULL: none, i.e. record = off and no record_dir),
 * whether recording starts with it (on), and the config line that says so (line: the record key's,
 * else the section's). Either may be NULL. */
char *lab_driver_record_path(const lab_drv_conf_t *conf, bool *on, int *line);
/* Wire recording (drivers/transport/wirerec.h): on or off at run time, to the file the config
 * named (record = PATH) or the default one (record_dir/ID.wire). Turning it on fails with
 * LAB_ESTATE when there is no such file (record = off and no record_dir), LAB_EIO (why in err)
 * when it cannot be written; the instrument runs on either way. */
int lab_driver_record(lab_driver_t *d, bool on, char *err, size_t errlen);
/* {"on", "path", "events", "dropped", "pending_bytes", "error"?}: the recording's state (a new
 * object); pending_bytes 0 means the file holds everything recorded so far. */
json_t *lab_driver_record_json(lab_driver_t *d);

/* ---- for drivers ---- */

void *lab_drv_priv(lab_driver_t *d);
uv_loop_t *lab_drv_loop(lab_driver_t *d);
/* Config values (the default when not given); the key must be in the driver's table. */
const char *lab_drv_str(lab_driver_t *d, const char *key);
long lab_drv_int(lab_driver_t *d, const char *key);
double lab_drv_double(lab_driver_t *d, const char *key);
/* Index of the value in the key's choices. */
int lab_drv_enum(lab_driver_t *d, const char *key);
/* Whether the section gave the key. */
bool lab_drv_has(lab_driver_t *d, const char *key);
double lab_drv_time_scale(lab_driver_t *d);
/* Real milliseconds for lab seconds (at least 1). */
uint64_t lab_drv_lab_ms(lab_driver_t *d, double lab_s);
/* Transport settings from port/baud/data_bits/parity/stop_bits/flow. */
void lab_drv_serial_settings(lab_driver_t *d, lab_transport_settings_t *s);

/* The connection's state: LAB_INST_OFFLINE (err says why), LAB_INST_IDLE or LAB_INST_FAULT.
 * Going offline fails the running operation with EOFFLINE unless the driver ended it. Besides
 * what the driver reports, the framework puts an idle instrument in fault when an operation ends
 * in timeout, protocol or device error, and back to idle when one succeeds (telemetry polls
 * included, and they go on in fault), so a device that returns is seen by itself. A fault the
 * driver reports is the driver's to clear. */
void lab_drv_set_state(lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *err);
/* Ends the running operation: err NULL or code OK = success with result (an object, stolen;
 * NULL means {}); otherwise the error (result ignored). */
void lab_drv_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result);
/* The running operation, or NULL (after an abort, for example). */
const lab_drv_action_t *lab_drv_current(lab_driver_t *d);
/* A telemetry sample the instrument pushed: an object, stolen; ts_ms its time (0: now). */
void lab_drv_telemetry(lab_driver_t *d, int64_t ts_ms, json_t *values);
/* Replaces a member of the model information (firmware, serial number); value stolen. */
void lab_drv_set_info(lab_driver_t *d, const char *key, json_t *value);
void lab_drv_closed(lab_driver_t *d);

#endif
