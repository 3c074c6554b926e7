/* The config key table and the INI reader around inih. inih's handler does not see line numbers,
 * so the reader it is given counts lines and notes section headers (inih never reports an empty
 * section, and "[postgres]" alone means "use PostgreSQL"). */
#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
    T_STR,
    T_INT,
    T_DOUBLE,
    T_LEVEL,
    T_SIZE,
    T_PATH,
    T_NAME,
    T_HOSTPORT,
    T_BOOL
} cfg_type_t;

enum { F_RELOAD = 1, F_REQUIRED = 2, F_SECRET = 4 };

typedef struct cfg_key {
    const char *section;
    const char *key;
    cfg_type_t type;
    size_t offset;
    const char *def; /* NULL: no default */
    double min, max; /* for numbers and sizes */
    unsigned flags;
    const char *help;
} cfg_key_t;

typedef struct cfg_section {
    const char *name;
    ptrdiff_t present; /* offset of the bool that says the section was given, or -1 */
    const char *help;
} cfg_section_t;

#define O(f) offsetof(lab_config_t, f)

static const cfg_section_t sections[] = {
    {"labloop", -1, "the cell: identity, API address, local store, clock"},
    {"postgres", O(pg_enabled), "the system of record; absent: the local store alone"},
    {"mqtt", O(mqtt_enabled), "the MQTT broker; absent: no MQTT"},
    {"auth", O(auth_enabled), "bearer tokens; absent: loopback only, no tokens"},
    {"workflows", O(workflows_enabled), "workflow files loaded at start; absent: API only"},
    {"scheduler", -1, "the online planner and the executor"},
    {"lab", -1, "the lab's shared queue in PostgreSQL; absent: this cell's own queue alone"},
    {"costs", O(costs_enabled),
     "prices of what runs use; instrument.ID = per hour and reagent.NAME = per µL besides the "
     "keys below; absent: use is counted, every price 0"},
};

static const cfg_key_t keys[] = {
    {"labloop", "site", T_NAME, O(site), "lab", 0, 0, 0, "site name, part of every MQTT topic"},
    {"labloop", "cell", T_NAME, O(cell), "cell1", 0, 0, 0, "workcell name, unique per site"},
    {"labloop", "state_dir", T_PATH, O(state_dir), "/var/lib/labloop", 0, 0, 0,
     "directory of the local store; labloopd writes nowhere else"},
    {"labloop", "http", T_HOSTPORT, O(http), "127.0.0.1:8470", 0, 0, 0, "HTTP API address"},
    {"labloop", "time_scale", T_DOUBLE, O(time_scale), "1", 0.001, 100000, 0,
     "lab seconds per real second (1 in production)"},
    {"labloop", "log_level", T_LEVEL, O(log_level), "info", 0, 0, F_RELOAD,
     "debug, info, warn or error"},
    {"labloop", "http_max_body", T_SIZE, O(http_max_body), "1M", 1024, 256.0 * 1024 * 1024, 0,
     "largest request body accepted (k, M suffixes)"},
    {"labloop", "http_max_connections", T_INT, O(http_max_conns), "256", 1, 10000, 0,
     "concurrent HTTP connections"},
    {"labloop", "http_idle_timeout", T_INT, O(http_idle_timeout_s), "15", 1, 3600, 0,
     "seconds an HTTP connection may take to send a whole request head, counted from its "
     "opening or its last answer, and the longest pause within a body; then it is closed"},
    {"labloop", "shutdown_grace", T_DOUBLE, O(shutdown_grace_s), "10", 0, 3600, F_RELOAD,
     "seconds TERM waits for in-flight work and the sinks to drain"},
    {"labloop", "events_max_streams", T_INT, O(events_max_streams), "64", 1, 10000, 0,
     "GET /v1/events streams open at once; one more is answered 503"},
    {"labloop", "events_keep", T_INT, O(events_keep), "20000", 0, 100000000, 0,
     "outbox rows kept after every sink delivered them, so an event stream resumes without a "
     "gap after a reconnect or a restart; older ids get an event: reset"},
    {"labloop", "events_stall", T_INT, O(events_stall_s), "30", 1, 3600, 0,
     "seconds an event stream with events waiting may take no bytes before it is dropped"},
    {"postgres", "conninfo", T_STR, O(pg_conninfo), NULL, 0, 0, F_REQUIRED | F_SECRET,
     "libpq connection string"},
    {"postgres", "connect_timeout", T_DOUBLE, O(pg_connect_timeout_s), "5", 0.1, 600, 0,
     "seconds before a connection attempt is abandoned"},
    {"postgres", "batch_rows", T_INT, O(pg_batch_rows), "2000", 1, 100000, 0,
     "outbox rows per PostgreSQL transaction"},
    {"postgres", "retry_max", T_DOUBLE, O(pg_retry_max_s), "30", 0.1, 3600, 0,
     "longest pause between reconnection attempts, seconds"},
    {"mqtt", "uri", T_STR, O(mqtt_uri), NULL, 0, 0, F_REQUIRED, "broker address, tcp://host:port"},
    {"mqtt", "topic_root", T_STR, O(mqtt_topic_root), "labloop/v1", 0, 0, 0,
     "topic prefix; topics are ROOT/SITE/CELL/..."},
    {"mqtt", "client_id", T_STR, O(mqtt_client_id), NULL, 0, 0, 0,
     "MQTT client id (default labloop-SITE-CELL)"},
    {"mqtt", "username", T_STR, O(mqtt_username), NULL, 0, 0, 0, "broker user name"},
    {"mqtt", "password", T_STR, O(mqtt_password), NULL, 0, 0, F_SECRET, "broker password"},
    {"mqtt", "keepalive", T_INT, O(mqtt_keepalive_s), "30", 2, 3600, 0, "keepalive, seconds"},
    {"mqtt", "inflight", T_INT, O(mqtt_inflight), "256", 1, 65535, 0,
     "QoS 1 messages awaiting acknowledgement at once"},
    {"mqtt", "retry_max", T_DOUBLE, O(mqtt_retry_max_s), "30", 0.1, 3600, 0,
     "longest pause between reconnection attempts, seconds"},
    {"auth", "tokens", T_PATH, O(auth_tokens), NULL, 0, 0, F_REQUIRED | F_RELOAD,
     "file of 'TOKEN ROLE [NAME]' lines; re-read on HUP"},
    {"workflows", "dir", T_PATH, O(workflows_dir), NULL, 0, 0, F_REQUIRED,
     "directory of workflow documents (*.json), each stored as a version at start"},
    {"scheduler", "budget_ms", T_INT, O(sched_budget_ms), "20", 0, 10000, 0,
     "planner time per re-plan, milliseconds (0: the first feasible plan)"},
    {"scheduler", "handling_s", T_DOUBLE, O(sched_handling_s), "60", 0, 3600, 0,
     "lab seconds an incubator needs to load and unload a plate, planned on top of the "
     "incubation"},
    {"scheduler", "step_timeout_factor", T_DOUBLE, O(sched_timeout_factor), "3", 1, 100, 0,
     "a step fails after this many times its longest duration plus 300 lab seconds"},
    {"lab", "shared_queue", T_BOOL, O(lab_shared_queue), "off", 0, 0, 0,
     "on: runs not pinned to this cell go into the lab's queue in PostgreSQL and this cell "
     "claims from it what it can run (needs [postgres])"},
    {"lab", "lease", T_INT, O(lab_lease_s), "15", 1, 3600, 0,
     "seconds a cell may go unheard before it is lost and its claimed runs not started return "
     "to the queue"},
    {"lab", "heartbeat", T_INT, O(lab_heartbeat_s), "5", 1, 1800, 0,
     "seconds between two heartbeats of this cell; at most lease / 2"},
    {"costs", "currency", T_NAME, O(costs_currency), "EUR", 0, 0, 0,
     "the currency of every price, e.g. EUR or USD"},
    {"costs", "plate", T_DOUBLE, O(costs_plate), "0", 0, 1e9, 0, "price of the plate of a run"},
    {"costs", "tip", T_DOUBLE, O(costs_tip), "0", 0, 1e9, 0, "price of one pipette tip"},
    {"costs", "instrument_hour", T_DOUBLE, O(costs_instrument_hour), "0", 0, 1e9, 0,
     "price of an hour of an instrument that has no instrument.ID price of its own"},
};

#define N_KEYS (sizeof keys / sizeof keys[0])
#define N_SECTIONS (sizeof sections / sizeof sections[0])

#define add_error lab_cfg_error_add

void lab_cfg_error_add(lab_cfg_errors_t *e, int line, const char *section, const char *key,
                       const char *fmt, ...)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->v = lab_realloc(e->v, sizeof *e->v * (size_t)e->cap);
    }
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->v[e->n++] = (lab_cfg_error_t){line, lab_strdup(section), lab_strdup(key), lab_strdup(buf)};
}

static char **str_field(lab_config_t *c, const cfg_key_t *k)
{
    return (char **)((char *)c + k->offset);
}

static const cfg_section_t *find_section(const char *name)
{
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (strcmp(sections[i].name, name) == 0)
            return &sections[i];
    return NULL;
}

static const cfg_key_t *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

static char *resolve_path(const char *dir, const char *p)
{
    if (p[0] == '/')
        return lab_strdup(p);
    return lab_asprintf("%s/%s", dir, p);
}

static int parse_size(const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || errno || d < 0)
        return LAB_EINVAL;
    while (*end == ' ')
        end++;
    double mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mult = 1024;
        end++;
        break;
    case 'm':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'g':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    default:
        return LAB_EINVAL;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return LAB_EINVAL;
    *out = floor(d * mult);
    return 0;
}

/* Sets one key from text; returns NULL or a reason (static text or a buffer in reason). */
static const char *set_value(lab_config_t *c, const cfg_key_t *k, const char *v, char *reason,
                             size_t rlen)
{
    char *base = (char *)c + k->offset;
    char *end;
    double d = 0;
    switch (k->type) {
    case T_STR:
        free(*(char **)base);
        *(char **)base = lab_strdup(v);
        return NULL;
    case T_PATH:
        if (!*v)
            return "must not be empty";
        free(*(char **)base);
        *(char **)base = resolve_path(c->dir, v);
        return NULL;
    case T_NAME:
        if (!*v)
            return "must not be empty";
        for (const char *p = v; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
                return "only letters, digits, '-' and '_' are allowed (it is part of MQTT topics)";
        free(*(char **)base);
        *(char **)base = lab_strdup(v);
        return NULL;
    case T_HOSTPORT: {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v)
            return "expected HOST:PORT, e.g. 127.0.0.1:8470";
        long port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 0 || port > 65535)
            return "port must be a number from 0 to 65535";
        free(*(char **)base);
        *(char **)base = lab_strdup(v);
        return NULL;
    }
    case T_BOOL:
        if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
            *(bool *)base = true;
        else if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
            *(bool *)base = false;
        else
            return "expected on or off";
        return NULL;
    case T_LEVEL: {
        int l = lab_log_level_parse(v);
        if (l < 0)
            return "expected one of debug, info, warn, error";
        *(int *)base = l;
        return NULL;
    }
    case T_INT:
    case T_DOUBLE:
        errno = 0;
        d = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(d))
            return k->type == T_INT ? "expected a whole number" : "expected a number";
        if (k->type == T_INT && d != floor(d))
            return "expected a whole number";
        break;
    case T_SIZE:
        if (parse_size(v, &d))
            return "expected a size such as 512k or 4M";
        break;
    }
    if (d < k->min || d > k->max) {
        snprintf(reason, rlen, "%s is out of range [%g, %g]", v, k->min, k->max);
        return reason;
    }
    if (k->type == T_INT)
        *(int *)base = (int)d;
    else if (k->type == T_SIZE)
        *(long *)base = (long)d;
    else
        *(double *)base = d;
    return NULL;
}

/* Reader state: inih calls our reader for each line, so the current line number is known. */
typedef struct parse_ctx {
    FILE *f;
    int line;
    lab_config_t *cfg;
    lab_cfg_errors_t *errs;
    char section[128];
    bool section_ok;
    int seen[N_KEYS];
    int section_line[N_SECTIONS];
    lab_cfg_instrument_t *inst; /* inside an [instrument ID] section */
} parse_ctx_t;

/* "[instrument ID]": a new instrument, its keys checked later by its driver. */
static void instrument_section(parse_ctx_t *p, const char *rest)
{
    while (isspace((unsigned char)*rest))
        rest++;
    lab_config_t *c = p->cfg;
    char sec[160];
    snprintf(sec, sizeof sec, "instrument %s", rest);
    if (!*rest) {
        add_error(p->errs, p->line, "instrument", "", "expected [instrument ID]");
        return;
    }
    for (const char *q = rest; *q; q++)
        if (!isalnum((unsigned char)*q) && *q != '-' && *q != '_') {
            add_error(p->errs, p->line, sec, "",
                      "an instrument id has only letters, digits, '-' and '_' (it is part of "
                      "MQTT topics and URLs)");
            return;
        }
    if (strlen(rest) > LAB_INSTRUMENT_ID_CHARS) {
        add_error(p->errs, p->line, "instrument", "", "an instrument id has at most %d characters",
                  LAB_INSTRUMENT_ID_CHARS);
        return;
    }
    for (int i = 0; i < c->n_instruments; i++)
        if (strcmp(c->instruments[i].id, rest) == 0) {
            add_error(p->errs, p->line, sec, "", "given twice (first on line %d)",
                      c->instruments[i].line);
            return;
        }
    c->instruments =
        lab_realloc(c->instruments, sizeof *c->instruments * (size_t)(c->n_instruments + 1));
    lab_cfg_instrument_t *in = &c->instruments[c->n_instruments++];
    memset(in, 0, sizeof *in);
    in->id = lab_strdup(rest);
    in->line = p->line;
    p->inst = in;
}

static char *reader(char *str, int num, void *stream)
{
    parse_ctx_t *p = stream;
    char *s = fgets(str, num, p->f);
    if (!s)
        return NULL;
    p->line++;
    const char *t = s;
    while (isspace((unsigned char)*t))
        t++;
    if (*t == '[') {
        const char *close = strchr(t, ']');
        size_t n = close ? (size_t)(close - t - 1) : 0;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)n, t + 1);
        /* trim */
        char *a = name;
        while (isspace((unsigned char)*a))
            a++;
        char *z = a + strlen(a);
        while (z > a && isspace((unsigned char)z[-1]))
            *--z = '\0';
        snprintf(p->section, sizeof p->section, "%s", a);
        const cfg_section_t *sec = close ? find_section(a) : NULL;
        p->section_ok = sec != NULL;
        p->inst = NULL;
        if (close && strncmp(a, "instrument", 10) == 0 &&
            (a[10] == '\0' || isspace((unsigned char)a[10]))) {
            instrument_section(p, a + 10);
            return s;
        }
        if (!close)
            add_error(p->errs, p->line, a, "", "section header without ']'");
        else if (!sec)
            add_error(p->errs, p->line, a, "", "unknown section");
        else if (sec->present >= 0)
            *(bool *)((char *)p->cfg + sec->present) = true;
        if (sec && !p->section_line[sec - sections])
            p->section_line[sec - sections] = p->line;
    }
    return s;
}

/* [costs] instrument.ID = per hour, reagent.NAME = per µL. */
static void price_key(parse_ctx_t *p, const char *key, const char *value)
{
    lab_config_t *c = p->cfg;
    bool inst = strncmp(key, "instrument.", 11) == 0;
    const char *name = key + (inst ? 11 : 8);
    size_t len = strlen(name);
    if (!len || len > 64) {
        add_error(p->errs, p->line, "costs", key, "expected %s.NAME, NAME 1 to 64 characters",
                  inst ? "instrument" : "reagent");
        return;
    }
    for (const char *q = name; *q; q++)
        if (!isalnum((unsigned char)*q) && !strchr("-_.", *q)) {
            add_error(p->errs, p->line, "costs", key,
                      "a name has only letters, digits, '-', '_' and '.'");
            return;
        }
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno || !(v >= 0) || v > 1e9) {
        add_error(p->errs, p->line, "costs", key, "expected a price from 0 to 1e9 %s",
                  inst ? "per hour" : "per µL");
        return;
    }
    lab_cfg_price_t **v_ = inst ? &c->costs_instruments : &c->costs_reagents;
    int *n = inst ? &c->n_costs_instruments : &c->n_costs_reagents;
    for (int i = 0; i < *n; i++)
        if (strcmp((*v_)[i].name, name) == 0) {
            add_error(p->errs, p->line, "costs", key, "given twice (first on line %d)",
                      (*v_)[i].line);
            return;
        }
    *v_ = lab_realloc(*v_, sizeof **v_ * (size_t)(*n + 1));
    (*v_)[(*n)++] = (lab_cfg_price_t){lab_strdup(name), v, p->line};
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx_t *p = user;
    if (p->inst) {
        lab_cfg_instrument_t *in = p->inst;
        if (in->n == in->cap) {
            in->cap = in->cap ? in->cap * 2 : 8;
            in->kv = lab_realloc(in->kv, sizeof *in->kv * (size_t)in->cap);
        }
        in->kv[in->n++] = (lab_cfg_kv_t){lab_strdup(name), lab_strdup(value), p->line};
        return 1;
    }
    if (!p->section_ok)
        return 1; /* the section itself is already reported */
    if (strncmp(name, "sim_", 4) == 0)
        return 1; /* labloop-sim's own keys: the daemon and the simulator share the file */
    if (strcmp(section, "costs") == 0 &&
        (strncmp(name, "instrument.", 11) == 0 || strncmp(name, "reagent.", 8) == 0)) {
        price_key(p, name, value);
        return 1;
    }
    const cfg_key_t *k = find_key(section, name);
    if (!k) {
        add_error(p->errs, p->line, section, name, "unknown key");
        return 1;
    }
    size_t idx = (size_t)(k - keys);
    if (p->seen[idx]) {
        add_error(p->errs, p->line, section, name, "given twice (first on line %d)", p->seen[idx]);
        return 1;
    }
    p->seen[idx] = p->line;
    char reason[160];
    const char *why = set_value(p->cfg, k, value, reason, sizeof reason);
    if (why)
        add_error(p->errs, p->line, section, name, "%s", why);
    return 1;
}

bool lab_config_addr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

int lab_config_http_addr(const char *hostport, struct sockaddr_storage *addr, socklen_t *alen)
{
    char host[256], port[16];
    const char *colon;
    if (hostport[0] == '[') {
        const char *close = strchr(hostport, ']');
        if (!close || close[1] != ':')
            return LAB_ECONFIG;
        snprintf(host, sizeof host, "%.*s", (int)(close - hostport - 1), hostport + 1);
        colon = close + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon)
            return LAB_ECONFIG;
        snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    }
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || !res)
        return LAB_ECONFIG;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *alen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void lab_config_check_http(const lab_config_t *cfg, int line, lab_cfg_errors_t *errs)
{
    struct sockaddr_storage addr;
    socklen_t alen;
    if (lab_config_http_addr(cfg->http, &addr, &alen)) {
        add_error(errs, line, "labloop", "http", "%s is not a HOST:PORT address that resolves",
                  cfg->http);
        return;
    }
    if (!cfg->auth_enabled && !lab_config_addr_loopback((struct sockaddr *)&addr))
        add_error(errs, line, "labloop", "http",
                  "%s is not a loopback address and there is no [auth] section: labloopd "
                  "serves beyond this machine only with tokens",
                  cfg->http);
}

int lab_config_load(const char *path, lab_config_t *cfg, lab_cfg_errors_t *errs)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->path = lab_strdup(path);
    char *tmp = lab_strdup(path);
    char *d = dirname(tmp);
    if (d[0] == '/') {
        cfg->dir = lab_strdup(d);
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd))
            snprintf(cwd, sizeof cwd, ".");
        cfg->dir = strcmp(d, ".") == 0 ? lab_strdup(cwd) : lab_asprintf("%s/%s", cwd, d);
    }
    free(tmp);

    char reason[160];
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].def)
            LAB_ASSERT(set_value(cfg, &keys[i], keys[i].def, reason, sizeof reason) == NULL);

    parse_ctx_t p = {.cfg = cfg, .errs = errs};
    p.f = fopen(path, "r");
    if (!p.f) {
        add_error(errs, 0, "", "", "cannot open: %s", strerror(errno));
        return LAB_ECONFIG;
    }
    int rc = ini_parse_stream(reader, &p, handler, &p);
    fclose(p.f);
    if (rc > 0)
        add_error(errs, rc, p.section, "", "not a 'key = value' line or a [section] header");
    else if (rc < 0)
        add_error(errs, 0, "", "", "could not be read");

    for (size_t i = 0; i < N_KEYS; i++) {
        const cfg_key_t *k = &keys[i];
        const cfg_section_t *sec = find_section(k->section);
        bool present = sec->present < 0 || *(bool *)((char *)cfg + sec->present);
        if ((k->flags & F_REQUIRED) && present && !p.seen[i])
            add_error(errs, p.section_line[sec - sections], k->section, k->key,
                      "required when [%s] is given", k->section);
    }
    size_t http_key = (size_t)(find_key("labloop", "http") - keys);
    lab_config_check_http(cfg, p.seen[http_key], errs);
    if (cfg->mqtt_enabled && !cfg->mqtt_client_id)
        cfg->mqtt_client_id = lab_asprintf("labloop-%s-%s", cfg->site, cfg->cell);
    if (cfg->mqtt_enabled && cfg->mqtt_uri && strncmp(cfg->mqtt_uri, "tcp://", 6) != 0 &&
        strncmp(cfg->mqtt_uri, "mqtt://", 7) != 0 && strncmp(cfg->mqtt_uri, "ssl://", 6) != 0)
        add_error(errs, 0, "mqtt", "uri", "expected tcp://HOST:PORT (or ssl://)");
    size_t sq_key = (size_t)(find_key("lab", "shared_queue") - keys);
    size_t hb_key = (size_t)(find_key("lab", "heartbeat") - keys);
    if (cfg->lab_shared_queue && !cfg->pg_enabled)
        add_error(errs, p.seen[sq_key], "lab", "shared_queue",
                  "on needs a [postgres] section: the shared queue lives in PostgreSQL");
    if (cfg->lab_heartbeat_s * 2 > cfg->lab_lease_s)
        add_error(errs, p.seen[hb_key], "lab", "heartbeat",
                  "%d s is more than half the lease (%d s): one late heartbeat would lose the "
                  "cell",
                  cfg->lab_heartbeat_s, cfg->lab_lease_s);
    for (int i = 0; i < cfg->n_costs_instruments; i++) {
        bool known = false;
        for (int j = 0; j < cfg->n_instruments; j++)
            known |= strcmp(cfg->instruments[j].id, cfg->costs_instruments[i].name) == 0;
        if (!known) {
            char key[80];
            snprintf(key, sizeof key, "instrument.%s", cfg->costs_instruments[i].name);
            add_error(errs, cfg->costs_instruments[i].line, "costs", key,
                      "no [instrument %s] section", cfg->costs_instruments[i].name);
        }
    }
    return errs->n ? LAB_ECONFIG : LAB_OK;
}

static void prices_free(lab_cfg_price_t **v, int *n)
{
    for (int i = 0; i < *n; i++)
        free((*v)[i].name);
    free(*v);
    *v = NULL;
    *n = 0;
}

void lab_config_free(lab_config_t *cfg)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        cfg_type_t t = keys[i].type;
        if (t == T_STR || t == T_PATH || t == T_NAME || t == T_HOSTPORT) {
            free(*str_field(cfg, &keys[i]));
            *str_field(cfg, &keys[i]) = NULL;
        }
    }
    for (int i = 0; i < cfg->n_instruments; i++) {
        lab_cfg_instrument_t *in = &cfg->instruments[i];
        for (int j = 0; j < in->n; j++) {
            free(in->kv[j].key);
            free(in->kv[j].value);
        }
        free(in->kv);
        free(in->id);
    }
    free(cfg->instruments);
    cfg->instruments = NULL;
    prices_free(&cfg->costs_instruments, &cfg->n_costs_instruments);
    prices_free(&cfg->costs_reagents, &cfg->n_costs_reagents);
    cfg->n_instruments = 0;
    free(cfg->path);
    free(cfg->dir);
    cfg->path = cfg->dir = NULL;
}

void lab_cfg_errors_print(const lab_cfg_errors_t *errs, const char *path, FILE *out)
{
    for (int i = 0; i < errs->n; i++) {
        const lab_cfg_error_t *e = &errs->v[i];
        fprintf(out, "%s:%d:", path, e->line);
        if (e->section && *e->section)
            fprintf(out, " [%s]", e->section);
        if (e->key && *e->key)
            fprintf(out, " %s", e->key);
        fprintf(out, ": %s\n", e->reason);
    }
}

void lab_cfg_errors_free(lab_cfg_errors_t *errs)
{
    for (int i = 0; i < errs->n; i++) {
        free(errs->v[i].section);
        free(errs->v[i].key);
        free(errs->v[i].reason);
    }
    free(errs->v);
    memset(errs, 0, sizeof *errs);
}

void lab_config_print_keys(FILE *out)
{
    static const char *const tnames[] = {"string", "integer", "number",    "level", "size",
                                         "path",   "name",    "host:port", "on|off"};
    for (size_t s = 0; s < N_SECTIONS; s++) {
        fprintf(out, "[%s]  ; %s\n", sections[s].name, sections[s].help);
        for (size_t i = 0; i < N_KEYS; i++) {
            const cfg_key_t *k = &keys[i];
            if (strcmp(k->section, sections[s].name) != 0)
                continue;
            fprintf(out, "  %-22s %-9s default=%s%s%s  ; %s\n", k->key, tnames[k->type],
                    k->def ? k->def : "-", k->flags & F_REQUIRED ? " required" : "",
                    k->flags & F_RELOAD ? " reloadable" : "", k->help);
        }
    }
}

bool lab_config_key_reloadable(const char *section, const char *key)
{
    const cfg_key_t *k = find_key(section, key);
    return k && (k->flags & F_RELOAD);
}

static bool value_equal(const lab_config_t *a, const lab_config_t *b, const cfg_key_t *k)
{
    const char *pa = (const char *)a + k->offset, *pb = (const char *)b + k->offset;
    switch (k->type) {
    case T_INT:
    case T_LEVEL:
        return *(const int *)pa == *(const int *)pb;
    case T_DOUBLE:
        return *(const double *)pa == *(const double *)pb;
    case T_SIZE:
        return *(const long *)pa == *(const long *)pb;
    case T_BOOL:
        return *(const bool *)pa == *(const bool *)pb;
    default: {
        const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
        return (!sa && !sb) || (sa && sb && strcmp(sa, sb) == 0);
    }
    }
}

static bool instruments_equal(const lab_config_t *a, const lab_config_t *b)
{
    if (a->n_instruments != b->n_instruments)
        return false;
    for (int i = 0; i < a->n_instruments; i++) {
        const lab_cfg_instrument_t *x = &a->instruments[i], *y = &b->instruments[i];
        if (strcmp(x->id, y->id) != 0 || x->n != y->n)
            return false;
        for (int j = 0; j < x->n; j++)
            if (strcmp(x->kv[j].key, y->kv[j].key) != 0 ||
                strcmp(x->kv[j].value, y->kv[j].value) != 0)
                return false;
    }
    return true;
}

const char **lab_config_restart_diff(const lab_config_t *a, const lab_config_t *b)
{
    const char **out = lab_calloc(N_KEYS + N_SECTIONS + 2, sizeof *out);
    int n = 0;
    if (!instruments_equal(a, b))
        out[n++] = "[instrument] sections";
    for (size_t s = 0; s < N_SECTIONS; s++)
        if (sections[s].present >= 0 && *(const bool *)((const char *)a + sections[s].present) !=
                                            *(const bool *)((const char *)b + sections[s].present))
            out[n++] = sections[s].name;
    for (size_t i = 0; i < N_KEYS; i++)
        if (!(keys[i].flags & F_RELOAD) && !value_equal(a, b, &keys[i]))
            out[n++] = keys[i].key;
    out[n] = NULL;
    return out;
}
