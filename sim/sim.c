/* labloop-sim core: pty and TCP links of the serial instruments, fault injection, the control
 * socket (one JSON object per line), start and clean stop. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include "sim/device.h"
#include "sim/log.h"
#include "sim/replay.h"

double sim_lab_now(const sim_t *s)
{
    return (double)(uv_hrtime() - s->t0_ns) / 1e9 * s->cfg.time_scale;
}

static void handle_closed(uv_handle_t *h)
{
    sim_t *s = h->loop->data;
    if (--s->open_handles == 0 && s->stopping)
        free(s);
}

static void close_handle(sim_t *s, uv_handle_t *h, uv_close_cb cb)
{
    (void)s;
    if (!uv_is_closing(h))
        uv_close(h, cb ? cb : handle_closed);
}

static void write_done(uv_write_t *req, int status)
{
    free(req);
}

void sim_inst_send(sim_inst_t *in, const void *buf, size_t n)
{
    uint8_t junk[8];
    if (in->garbage_next) {
        in->garbage_next = 0;
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)(sim_rand_next(&in->rng) | 0x80); /* never a terminator */
        sim_inst_send(in, junk, sizeof junk);
    }
    if (in->disconnected)
        return;
    if (in->link_tcp) {
        if (!in->client_open)
            return;
        /* The request and its copy of the bytes are one block, freed when the write ends, so a
         * slow client queues replies instead of stalling the loop. */
        uv_write_t *req = malloc(sizeof *req + n);
        if (!req)
            return;
        memcpy(req + 1, buf, n);
        uv_buf_t b = uv_buf_init((char *)(req + 1), (unsigned)n);
        if (uv_write(req, (uv_stream_t *)&in->client, &b, 1, write_done) < 0)
            free(req);
        return;
    }
    const uint8_t *p = buf;
    while (n && in->master >= 0) {
        ssize_t w = write(in->master, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            sim_warn("link", "%s: write: %s", in->cfg->id, strerror(errno));
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void inst_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    if (in->sticky == SIM_FAULT_TIMEOUT || in->sim->stopping)
        return;
    if (in->replay) {
        sim_replay_feed(in, data, n);
        return;
    }
    switch (in->cfg->driver) {
    case SIM_LICONIC:
        sim_liconic_feed(in, data, n);
        break;
    case SIM_BIOTEK:
        sim_biotek_feed(in, data, n);
        break;
    case SIM_STAR:
        sim_star_feed(in, data, n);
        break;
    case SIM_SPECTRAMAX:
        sim_spectramax_feed(in, data, n);
        break;
    case SIM_KEYENCE:
        sim_keyence_feed(in, data, n);
        break;
    case SIM_OPENTRONS:
        sim_opentrons_feed(in, data, n);
        break;
    case SIM_MODBUS_TEMP:
        break;
    case SIM_CYTOMAT:
        sim_cytomat_feed(in, data, n);
        break;
    }
}

/* ---- pty link ---- */

static void pty_readable(uv_poll_t *p, int status, int events)
{
    sim_inst_t *in = p->data;
    uint8_t buf[4096];
    if (status < 0)
        return;
    ssize_t n = read(in->master, buf, sizeof buf);
    if (n > 0)
        inst_feed(in, buf, (size_t)n);
}

/* The directory a port's symlink goes in, made when missing (e.g. /tmp/labloop on a fresh
 * machine, or after a reboot cleared /tmp). */
int sim_link_dir_make(const char *id, const char *path)
{
    char dir[sizeof((sim_inst_cfg_t *)NULL)->port];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            sim_error("link", "%s: mkdir %s: %s", id, dir, strerror(errno));
            return -1;
        }
        *p = c;
        if (!c)
            return 0;
    }
}

static int pty_open(sim_inst_t *in)
{
    const char *path = in->cfg->port;
    struct stat st;
    if (sim_link_dir_make(in->cfg->id, path))
        return -1;
    if (lstat(path, &st) == 0) {
        if (!S_ISLNK(st.st_mode)) {
            sim_error("link", "%s: %s exists and is not a symlink; not replacing it", in->cfg->id,
                      path);
            return -1;
        }
        unlink(path);
    }
    struct termios tio;
    if (openpty(&in->master, &in->slave, NULL, NULL, NULL) < 0) {
        sim_error("link", "%s: openpty: %s", in->cfg->id, strerror(errno));
        return -1;
    }
    tcgetattr(in->slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(in->slave, TCSANOW, &tio);
    fcntl(in->master, F_SETFD, FD_CLOEXEC);
    fcntl(in->slave, F_SETFD, FD_CLOEXEC);
    char *name = ttyname(in->slave);
    if (!name || symlink(name, path) < 0) {
        sim_error("link", "%s: symlink %s: %s", in->cfg->id, path, strerror(errno));
        close(in->master);
        close(in->slave);
        in->master = in->slave = -1;
        return -1;
    }
    uv_poll_init(in->sim->loop, &in->poll, in->master);
    in->poll.data = in;
    in->poll_open = 1;
    in->opened = 0; /* a fresh link needs the handshake again */
    in->sim->open_handles++;
    uv_poll_start(&in->poll, UV_READABLE, pty_readable);
    sim_info("link", "%s: %s -> %s", in->cfg->id, path, name);
    if (in->replay)
        sim_replay_link_open(in);
    return 0;
}

static void pty_closed(uv_handle_t *h)
{
    sim_inst_t *in = h->data;
    in->poll_open = in->poll_closing = 0;
    if (in->master >= 0)
        close(in->master);
    if (in->slave >= 0)
        close(in->slave);
    in->master = in->slave = -1;
    int reopen = in->reopen_after_close && !in->sim->stopping;
    in->reopen_after_close = 0;
    if (reopen)
        pty_open(in);
    handle_closed(h); /* last: it may free the simulator that owns in */
}

static void pty_close(sim_inst_t *in)
{
    if (in->poll_open && !in->poll_closing) {
        in->poll_closing = 1;
        uv_poll_stop(&in->poll);
        uv_close((uv_handle_t *)&in->poll, pty_closed);
        unlink(in->cfg->port);
    }
}

/* ---- TCP link: one client at a time ---- */

static void tcp_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void client_closed(uv_handle_t *h)
{
    sim_inst_t *in = h->data;
    in->client_open = 0;
    handle_closed(h);
}

static void tcp_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sim_inst_t *in = st->data;
    if (n > 0)
        inst_feed(in, (const uint8_t *)b->base, (size_t)n);
    else if (n < 0)
        close_handle(in->sim, (uv_handle_t *)&in->client, client_closed);
}

static void tcp_conn(uv_stream_t *srv, int status)
{
    sim_inst_t *in = srv->data;
    if (status < 0)
        return;
    uv_tcp_t *c = &in->client, spare;
    int busy = in->client_open || in->disconnected;
    if (busy)
        c = malloc(sizeof *c);
    uv_tcp_init(in->sim->loop, c);
    in->sim->open_handles++;
    c->data = in;
    if (uv_accept(srv, (uv_stream_t *)c) < 0 || busy) {
        uv_close((uv_handle_t *)c, busy ? (uv_close_cb)free : handle_closed);
        if (busy)
            in->sim->open_handles--;
        (void)spare;
        return;
    }
    in->client_open = 1;
    in->opened = 0;
    /* A TCP connection is a session of its own (a networked instrument's port, not a serial line
     * behind a device server): what an earlier client left half sent, e.g. a BioTek 'D' whose
     * parameter never came because the daemon was killed, is not taken as the start of this
     * client's bytes. A serial line keeps it; resynchronising there is the driver's work. */
    proto_lines_init(&in->lines);
    biotek_cmd_rx_init(&in->brx);
    if (in->ot)
        sim_opentrons_link_open(in);
    uv_read_start((uv_stream_t *)c, tcp_alloc, tcp_read);
    if (in->replay)
        sim_replay_link_open(in);
}

static int tcp_listen(sim_inst_t *in, int port)
{
    struct sockaddr_in a;
    in->link_tcp = 1;
    if (uv_ip4_addr(in->cfg->host, port, &a) < 0) {
        sim_error("link", "%s: bad address %s", in->cfg->id, in->cfg->host);
        return -1;
    }
    uv_tcp_init(in->sim->loop, &in->listener);
    in->sim->open_handles++;
    in->listener.data = in;
    int r = uv_tcp_bind(&in->listener, (const struct sockaddr *)&a, 0);
    if (!r)
        r = uv_listen((uv_stream_t *)&in->listener, 4, tcp_conn);
    if (r) {
        sim_error("link", "%s: listen %s:%d: %s", in->cfg->id, in->cfg->host, port, uv_strerror(r));
        return -1;
    }
    sim_info("link", "%s: serving on tcp://%s:%d", in->cfg->id, in->cfg->host, port);
    return 0;
}

/* A replayed recording is served on the link the instrument's section names: Modbus TCP when it
 * has modbus = tcp://, Modbus RTU on its port for a req/rsp recording with a port, its bytes on
 * its port (pty or tcp://) otherwise. */
static int replay_start(sim_inst_t *in)
{
    const sim_inst_cfg_t *c = in->cfg;
    replay_t *rp = in->replay;
    int has_port = c->port[0] || c->tcp_port;
    if (rp->modbus && c->modbus_port && !c->modbus_rtu) {
        replay_set_link(rp, REPLAY_LINK_MODBUS_TCP);
        return tcp_listen(in, c->modbus_port);
    }
    if (!has_port) {
        sim_error("replay",
                  "%s: a recording of %s needs a port (pty path or tcp://) in [instrument %s]",
                  c->id, rp->modbus ? "Modbus RTU" : "bytes", c->id);
        return -1;
    }
    replay_set_link(rp, rp->modbus ? REPLAY_LINK_MODBUS_RTU : REPLAY_LINK_BYTES);
    sim_info("replay", "%s: playing %d exchanges (%s)", c->id, rp->n,
             rp->modbus ? "Modbus RTU" : "bytes");
    return c->tcp_port ? tcp_listen(in, c->tcp_port) : pty_open(in);
}

/* ---- faults ---- */

static void link_up(sim_inst_t *in)
{
    if (!in->disconnected)
        return;
    in->disconnected = 0;
    uv_timer_stop(&in->reconnect);
    if (in->cfg->driver == SIM_MODBUS_TEMP) {
        sim_modbus_fault(in, SIM_FAULT_NONE);
        return;
    }
    if (in->link_tcp)
        return;
    if (in->poll_closing)
        in->reopen_after_close = 1;
    else if (!in->poll_open)
        pty_open(in);
    sim_info("fault", "%s: link back", in->cfg->id);
}

static void reconnect_due(uv_timer_t *t)
{
    link_up(t->data);
}

static void fault_apply(sim_t *s, sim_inst_t *in, sim_fault_t f, double seconds)
{
    switch (f) {
    case SIM_FAULT_NONE:
        in->sticky = SIM_FAULT_NONE;
        in->garbage_next = in->error_next = 0;
        in->armed = SIM_FAULT_NONE;
        in->armed_in = 0;
        link_up(in);
        break;
    case SIM_FAULT_TIMEOUT:
        in->sticky = f;
        break;
    case SIM_FAULT_GARBAGE:
        in->garbage_next = 1;
        break;
    case SIM_FAULT_ERROR:
        in->error_next = 1;
        break;
    case SIM_FAULT_DISCONNECT:
        in->disconnected = 1;
        if (in->cfg->driver != SIM_MODBUS_TEMP) {
            if (in->link_tcp && in->client_open)
                close_handle(s, (uv_handle_t *)&in->client, client_closed);
            else if (!in->link_tcp)
                pty_close(in);
        }
        if (seconds > 0)
            uv_timer_start(&in->reconnect, reconnect_due,
                           (uint64_t)(seconds * 1000 / s->cfg.time_scale) + 1, 0);
        break;
    }
    if (in->cfg->driver == SIM_MODBUS_TEMP)
        sim_modbus_fault(in, f);
}

void sim_inst_command(sim_inst_t *in)
{
    if (in->armed_in <= 0 || --in->armed_in > 0)
        return;
    sim_fault_t f = in->armed;
    in->armed = SIM_FAULT_NONE;
    sim_info("fault", "%s: armed fault fires on this command", in->cfg->id);
    fault_apply(in->sim, in, f, in->armed_s);
}

int sim_fault(sim_t *s, const char *id, const char *fault, double seconds, int at_command,
              char *err, size_t cap)
{
    sim_inst_t *in = NULL;
    for (int i = 0; i < s->cfg.n; i++)
        if (strcmp(s->cfg.inst[i].id, id) == 0)
            in = &s->inst[i];
    if (!in) {
        snprintf(err, cap, "unknown instrument '%s'", id);
        return -1;
    }
    if (in->replay) {
        snprintf(err, cap, "'%s' plays a recording; its faults are the recorded ones", id);
        return -1;
    }
    static const struct {
        const char *name;
        sim_fault_t f;
    } kinds[] = {{"timeout", SIM_FAULT_TIMEOUT},
                 {"garbage", SIM_FAULT_GARBAGE},
                 {"error", SIM_FAULT_ERROR},
                 {"disconnect", SIM_FAULT_DISCONNECT},
                 {"clear", SIM_FAULT_NONE}};
    int k = -1;
    for (int i = 0; i < (int)(sizeof kinds / sizeof kinds[0]); i++)
        if (strcmp(kinds[i].name, fault) == 0)
            k = i;
    if (k < 0) {
        snprintf(err, cap, "unknown fault '%s' (timeout, garbage, error, disconnect, clear)",
                 fault);
        return -1;
    }
    sim_fault_t f = kinds[k].f;
    if (at_command < 0 ||
        (at_command > 0 && (f == SIM_FAULT_NONE ||
                            (in->cfg->driver != SIM_STAR && in->cfg->driver != SIM_OPENTRONS)))) {
        snprintf(err, cap,
                 "at_command %d: a positive count, for a fault on an instrument that counts its "
                 "commands (the STAR)",
                 at_command);
        return -1;
    }
    if (at_command > 0) {
        sim_info("fault", "%s: %s armed for command %d from now", id, fault, at_command);
        in->armed = f;
        in->armed_in = at_command;
        in->armed_s = seconds;
        return 0;
    }
    sim_info("fault", "%s: %s", id, fault);
    fault_apply(s, in, f, seconds);
    return 0;
}

/* ---- control socket ---- */

typedef struct ctl_conn {
    uv_pipe_t pipe;
    sim_t *sim;
    proto_lines_t lines;
} ctl_conn_t;

static void ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void ctl_closed(uv_handle_t *h)
{
    ctl_conn_t *c = h->data;
    sim_t *s = c->sim;
    free(c);
    handle_closed((uv_handle_t *)&s->control);
}

static void ctl_answer(ctl_conn_t *c, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    size_t n = strlen(text);
    char *line = malloc(n + 2);
    memcpy(line, text, n);
    line[n] = '\n';
    free(text);
    uv_buf_t b = uv_buf_init(line, (unsigned)n + 1);
    while (b.len) {
        int r = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
        if (r == UV_EAGAIN)
            continue;
        if (r < 0)
            break;
        b.base += r;
        b.len -= (size_t)r;
    }
    free(line);
}

static json_t *ctl_error(const char *msg)
{
    return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

static void tick_incubators(sim_t *s)
{
    for (int i = 0; i < s->cfg.n; i++)
        if (s->cfg.inst[i].driver == SIM_LICONIC && s->inst[i].flags)
            sim_liconic_tick(&s->inst[i]);
        else if (s->cfg.inst[i].driver == SIM_CYTOMAT && !s->inst[i].replay)
            sim_cytomat_tick(&s->inst[i]);
}

/* Every plate of the world, in the order it came into it, with where it is now. */
static json_t *ctl_plates(sim_t *s)
{
    tick_incubators(s);
    json_t *list = json_array();
    for (int i = 0; i < s->world.n_plates; i++) {
        const sim_plate_t *p = &s->world.plates[i];
        json_array_append_new(list,
                              json_pack("{s:s,s:s,s:f,s:f}", "barcode", p->barcode, "position",
                                        p->position, "incubation_degC_s", p->incub_deg_s,
                                        "dispensed_ul", sim_world_dispensed(p)));
    }
    return json_pack("{s:b,s:o}", "ok", 1, "plates", list);
}

/* What went into each well of a plate: {"B3": {"substrate": 50.0}, ...}, empty wells left out. */
static json_t *ctl_wells(const sim_world_t *w, const sim_plate_t *p)
{
    json_t *wells = json_object();
    for (int r = 0; r < SIM_ROWS; r++)
        for (int c = 0; c < SIM_COLS; c++) {
            json_t *one = NULL;
            for (int k = 0; k < w->n_reagents; k++) {
                if (p->ul[r][c][k] <= 0)
                    continue;
                if (!one)
                    one = json_object();
                json_object_set_new(one, w->reagents[k], json_real(p->ul[r][c][k]));
            }
            if (one) {
                char name[8];
                snprintf(name, sizeof name, "%c%d", 'A' + r, c + 1);
                json_object_set_new(wells, name, one);
            }
        }
    return wells;
}

/* {"plate": BARCODE, "position": POS}: a person puts the plate there (the world learns a run's
 * plate by its name: "transfer:inc1" before a load, "outside" away from every instrument). A
 * position that holds another plate is refused. */
static json_t *ctl_place(sim_t *s, const char *plate, const char *pos)
{
    char msg[256];
    sim_plate_t *other = sim_world_at(&s->world, pos);
    if (!*pos || strlen(pos) >= sizeof other->position) {
        snprintf(msg, sizeof msg, "position: 1 to %zu bytes", sizeof other->position - 1);
        return ctl_error(msg);
    }
    if (other && strcmp(other->barcode, plate) != 0 && strcmp(pos, "outside") != 0) {
        snprintf(msg, sizeof msg, "%.128s holds %.64s", pos, other->barcode);
        return ctl_error(msg);
    }
    sim_plate_t *p = sim_world_plate(&s->world, plate);
    if (!p)
        return ctl_error("too many plates");
    snprintf(p->position, sizeof p->position, "%s", pos);
    sim_info("world", "plate %s put at %s", plate, pos);
    return json_pack("{s:b,s:s}", "ok", 1, "position", p->position);
}

/* {"instrument": ID, "label": TEXT | null | false}: what a barcode reader has in front. */
static json_t *ctl_label(sim_t *s, const char *id, const json_t *label)
{
    char msg[256];
    for (int i = 0; i < s->cfg.n; i++) {
        if (strcmp(s->cfg.inst[i].id, id) != 0)
            continue;
        if (s->cfg.inst[i].driver != SIM_KEYENCE || s->inst[i].replay) {
            snprintf(msg, sizeof msg, "'%s' is not a simulated barcode reader", id);
            return ctl_error(msg);
        }
        if (sim_keyence_label(&s->inst[i], label, msg, sizeof msg))
            return ctl_error(msg);
        return json_pack("{s:b}", "ok", 1);
    }
    snprintf(msg, sizeof msg, "unknown instrument '%s'", id);
    return ctl_error(msg);
}

static int ctl_line(void *ud, const char *line, size_t len, int err)
{
    ctl_conn_t *c = ud;
    sim_t *s = c->sim;
    if (err) {
        ctl_answer(c, ctl_error(lab_strerror(err)));
        return 0;
    }
    json_error_t je;
    json_t *req = json_loadb(line, len, 0, &je);
    if (!req || !json_is_object(req)) {
        char msg[256];
        snprintf(msg, sizeof msg, "not a JSON object: %s", req ? "wrong type" : je.text);
        json_decref(req);
        ctl_answer(c, ctl_error(msg));
        return 0;
    }
    const char *plate = json_string_value(json_object_get(req, "plate"));
    const char *id = json_string_value(json_object_get(req, "instrument"));
    const char *fault = json_string_value(json_object_get(req, "fault"));
    json_t *sec = json_object_get(req, "seconds");
    json_t *at = json_object_get(req, "at_command");
    json_t *label = json_object_get(req, "label");
    if (json_is_true(json_object_get(req, "plates"))) {
        ctl_answer(c, ctl_plates(s));
    } else if (id && label) {
        ctl_answer(c, ctl_label(s, id, label));
    } else if (plate && json_is_string(json_object_get(req, "position"))) {
        ctl_answer(c, ctl_place(s, plate, json_string_value(json_object_get(req, "position"))));
    } else if (plate) {
        tick_incubators(s);
        sim_plate_t *p = sim_world_plate(&s->world, plate);
        if (!p)
            ctl_answer(c, ctl_error("too many plates"));
        else
            ctl_answer(c, json_pack("{s:b,s:s,s:f,s:o}", "ok", 1, "position", p->position,
                                    "incubation_degC_s", p->incub_deg_s, "wells",
                                    ctl_wells(&s->world, p)));
    } else if (!id || !fault || (sec && !json_is_number(sec)) ||
               (at && (!json_is_integer(at) || json_integer_value(at) > 1000000))) {
        ctl_answer(c, ctl_error("expected {\"instrument\":ID,\"fault\":KIND[,\"seconds\":N]"
                                "[,\"at_command\":N]}, {\"plate\":BARCODE[,\"position\":POS]}, "
                                "{\"plates\":true} or "
                                "{\"instrument\":ID,\"label\":TEXT|null|false}"));
    } else {
        char msg[256];
        if (sim_fault(s, id, fault, sec ? json_number_value(sec) : 0,
                      at ? (int)json_integer_value(at) : 0, msg, sizeof msg))
            ctl_answer(c, ctl_error(msg));
        else
            ctl_answer(c, json_pack("{s:b}", "ok", 1));
    }
    json_decref(req);
    return 0;
}

static void ctl_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    ctl_conn_t *c = st->data;
    if (n > 0)
        proto_lines_feed(&c->lines, (const uint8_t *)b->base, (size_t)n, ctl_line, c);
    else if (n < 0)
        uv_close((uv_handle_t *)st, ctl_closed);
}

static void ctl_conn(uv_stream_t *srv, int status)
{
    sim_t *s = srv->loop->data;
    if (status < 0)
        return;
    ctl_conn_t *c = calloc(1, sizeof *c);
    c->sim = s;
    proto_lines_init(&c->lines);
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    s->open_handles++;
    if (uv_accept(srv, (uv_stream_t *)&c->pipe) < 0) {
        uv_close((uv_handle_t *)&c->pipe, ctl_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_read);
}

/* ---- start / stop ---- */

int sim_start(uv_loop_t *loop, const sim_cfg_t *cfg, const char *control_path, sim_t **out)
{
    sim_t *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->loop = loop;
    loop->data = s;
    s->cfg = *cfg;
    s->t0_ns = uv_hrtime();
    sim_world_init(&s->world, cfg->seed, cfg->noise);
    s->world.design = cfg->design;
    *out = s;
    for (int i = 0; i < s->cfg.n; i++) {
        sim_inst_t *in = &s->inst[i];
        in->sim = s;
        in->cfg = &s->cfg.inst[i];
        in->master = in->slave = -1;
        in->rng = cfg->seed * 1000003u + (uint64_t)i;
        uv_timer_init(loop, &in->reconnect);
        uv_timer_init(loop, &in->step);
        in->reconnect.data = in->step.data = in;
        s->open_handles += 2;
        int r = 0;
        in->replay = in->cfg->replay;
        s->cfg.inst[i].replay = NULL; /* owned by the instrument from here */
        if (in->replay) {
            if (replay_start(in))
                return -1;
            continue;
        }
        switch (in->cfg->driver) {
        case SIM_LICONIC:
            sim_liconic_init(in);
            break;
        case SIM_BIOTEK:
            sim_biotek_init(in);
            break;
        case SIM_STAR:
            sim_star_init(in);
            break;
        case SIM_SPECTRAMAX:
            sim_spectramax_init(in);
            break;
        case SIM_KEYENCE:
            sim_keyence_init(in);
            break;
        case SIM_OPENTRONS:
            sim_opentrons_init(in);
            break;
        case SIM_MODBUS_TEMP:
            r = sim_modbus_start(in);
            break;
        case SIM_CYTOMAT:
            sim_cytomat_init(in);
            break;
        }
        if (!r && in->cfg->driver != SIM_MODBUS_TEMP)
            r = in->cfg->tcp_port ? tcp_listen(in, in->cfg->tcp_port) : pty_open(in);
        if (r)
            return -1;
    }
    snprintf(s->control_path, sizeof s->control_path, "%s", control_path);
    unlink(control_path);
    uv_pipe_init(loop, &s->control, 0);
    s->open_handles++;
    s->control_open = 1;
    int r = uv_pipe_bind(&s->control, control_path);
    if (!r)
        r = uv_listen((uv_stream_t *)&s->control, 8, ctl_conn);
    if (r) {
        sim_error("control", "%s: %s", control_path, uv_strerror(r));
        return -1;
    }
    sim_info("control", "listening on %s", control_path);
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h) && h->type == UV_NAMED_PIPE)
        uv_close(h, ((uv_pipe_t *)h == &((sim_t *)arg)->control) ? handle_closed : ctl_closed);
}

void sim_stop(sim_t *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    for (int i = 0; i < s->cfg.n; i++) {
        sim_inst_t *in = &s->inst[i];
        if (!in->cfg)
            continue;
        if (in->cfg->driver == SIM_MODBUS_TEMP && !in->replay)
            sim_modbus_stop(in);
        if (in->replay)
            sim_replay_stop(in);
        if (in->poll_open)
            pty_close(in);
        if (in->client_open)
            close_handle(s, (uv_handle_t *)&in->client, client_closed);
        if (in->link_tcp && in->listener.loop)
            close_handle(s, (uv_handle_t *)&in->listener, NULL);
        close_handle(s, (uv_handle_t *)&in->reconnect, NULL);
        close_handle(s, (uv_handle_t *)&in->step, NULL);
        sim_opentrons_free(in);
        free(in->flags);
        free(in->dm);
        in->flags = NULL;
        in->dm = NULL;
    }
    if (s->control_open) {
        uv_walk(s->loop, close_walk, s);
        unlink(s->control_path);
    }
    if (s->open_handles == 0)
        free(s);
}
