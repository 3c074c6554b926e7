/* Configuration: an INI file read with inih, driven by one typed table of keys (type, default,
 * range, help). Unknown sections and keys are errors; every error carries file:line. */
#ifndef LAB_CORE_CFG_H
#define LAB_CORE_CFG_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

/* One key = value of an [instrument ID] section. Such sections are kept as text: the instrument's
 * driver owns their key table (drivers/driver.h, lab_driver_check). */
typedef struct lab_cfg_kv {
    char *key, *value;
    int line;
} lab_cfg_kv_t;

typedef struct lab_cfg_instrument {
    char *id;
    int line; /* of the [instrument ID] header */
    lab_cfg_kv_t *kv;
    int n, cap;
} lab_cfg_instrument_t;

/* A price of [costs] named by its key: instrument.ID (per hour) or reagent.NAME (per µL). */
typedef struct lab_cfg_price {
    char *name; /* the instrument id or the reagent name */
    double value;
    int line;
} lab_cfg_price_t;

typedef struct lab_config {
    char *path; /* the file as given */
    char *dir;  /* its directory: relative paths in the file are relative to it */

    /* [labloop] */
    char *site;
    char *cell;
    char *state_dir; /* absolute after loading */
    char *http;      /* host:port */
    double time_scale;
    int log_level;
    long http_max_body; /* bytes */
    int http_max_conns;
    int http_idle_timeout_s; /* a connection without a whole request head this long is closed */
    double shutdown_grace_s; /* how long TERM waits for in-flight work and sinks */
    int events_max_streams;  /* GET /v1/events streams open at once */
    int events_keep;         /* outbox rows kept after delivery, for streams to resume from */
    int events_stall_s;      /* a stream that takes no bytes this long is dropped */

    /* [postgres]; absent: embedded mode for PostgreSQL */
    bool pg_enabled;
    char *pg_conninfo;
    double pg_connect_timeout_s;
    int pg_batch_rows;
    double pg_retry_max_s;

    /* [mqtt]; absent: no MQTT */
    bool mqtt_enabled;
    char *mqtt_uri;
    char *mqtt_topic_root; /* the full root is topic_root/site/cell */
    char *mqtt_client_id;
    char *mqtt_username;
    char *mqtt_password;
    int mqtt_keepalive_s;
    int mqtt_inflight;
    double mqtt_retry_max_s;

    /* [auth]; absent: loopback only, no tokens */
    bool auth_enabled;
    char *auth_tokens; /* absolute after loading */

    /* [workflows]; absent: workflows come through the API only */
    bool workflows_enabled;
    char *workflows_dir; /* absolute after loading */

    /* [scheduler]; optional, defaults apply */
    int sched_budget_ms;         /* planner time per re-plan */
    double sched_handling_s;     /* lab s an incubator spends loading + unloading a plate */
    double sched_timeout_factor; /* a step fails after factor x its longest duration + 300 s */

    /* [lab]; absent: this cell serves its own queue alone */
    bool lab_shared_queue; /* claim from and submit to labloop.queue in PostgreSQL */
    int lab_lease_s;       /* a cell not heard from this long is lost */
    int lab_heartbeat_s;   /* at most lease / 2 */

    /* [costs]; absent: what runs use is counted and every price is 0 */
    bool costs_enabled;
    char *costs_currency;
    double costs_plate;           /* per plate run */
    double costs_tip;             /* per tip */
    double costs_instrument_hour; /* per instrument-hour, for an instrument without its own */
    lab_cfg_price_t *costs_instruments, *costs_reagents; /* instrument.ID, reagent.NAME */
    int n_costs_instruments, n_costs_reagents;

    /* [instrument ID], in file order */
    lab_cfg_instrument_t *instruments;
    int n_instruments;
} lab_config_t;

typedef struct lab_cfg_error {
    int line; /* 0 when the error is about the file as a whole */
    char *section;
    char *key;
    char *reason;
} lab_cfg_error_t;

typedef struct lab_cfg_errors {
    lab_cfg_error_t *v;
    int n, cap;
} lab_cfg_errors_t;

/* Fills cfg with defaults, then the file. Returns 0, or LAB_ECONFIG with every problem in errs
 * (cfg is then partly filled and must still be freed). */
int lab_config_load(const char *path, lab_config_t *cfg, lab_cfg_errors_t *errs);
void lab_config_free(lab_config_t *cfg);
/* "FILE:LINE: [section] key: reason", one per line. */
void lab_cfg_errors_print(const lab_cfg_errors_t *errs, const char *path, FILE *out);
void lab_cfg_errors_free(lab_cfg_errors_t *errs);
void lab_cfg_error_add(lab_cfg_errors_t *errs, int line, const char *section, const char *key,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The API's address: "HOST:PORT" or "[V6]:PORT" that resolves, into addr. 0 or LAB_ECONFIG. */
int lab_config_http_addr(const char *hostport, struct sockaddr_storage *addr, socklen_t *alen);
bool lab_config_addr_loopback(const struct sockaddr *sa);
/* What the API's address must be for labloopd to serve on it: one that resolves, and beyond
 * loopback only with [auth]. lab_config_load applies it, so `labloopd --check`, a start and a
 * reload refuse the same configs; the API checks it again when it binds. */
void lab_config_check_http(const lab_config_t *cfg, int line, lab_cfg_errors_t *errs);
/* The key table as documentation (used by --help-config). */
void lab_config_print_keys(FILE *out);
/* Whether a key may change on HUP without a restart. */
bool lab_config_key_reloadable(const char *section, const char *key);
/* Names of keys whose values differ between a and b and that need a restart; NULL-terminated,
 * caller frees the array (not the strings). */
const char **lab_config_restart_diff(const lab_config_t *a, const lab_config_t *b);

#endif
