/* One simulated device (an instrument of the sim's config, sim_inst_t): its link (pty, TCP or
 * Modbus TCP), its fault state and its device state. Shared by sim.c (links, faults, control)
 * and the per-device files dev_*.c. */
#ifndef LAB_SIM_DEVICE_H
#define LAB_SIM_DEVICE_H
#include <jansson.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <uv.h>
#include "protocols/biotek.h"
#include "protocols/proto.h"
#include "sim/sim.h"

#define STAR_QUEUE_MAX 16
#define LICONIC_ADDR_MAX 10000

/* What a barcode reader has in front of it. */
enum { SIM_LABEL_WORLD = 0, SIM_LABEL_TEXT, SIM_LABEL_UNREADABLE };

typedef struct sim_modbus sim_modbus_t;

typedef struct sim_inst {
    sim_t *sim;
    const sim_inst_cfg_t *cfg;
    uint64_t rng;
    /* link */
    int master, slave;
    uv_poll_t poll;
    int poll_open, poll_closing, reopen_after_close;
    uv_tcp_t listener;
    uv_tcp_t client;
    int client_open;
    int link_tcp; /* the link is a TCP server (serial over TCP, or a replayed Modbus TCP) */
    uv_timer_t reconnect;
    uv_timer_t step;
    /* faults: timeout and disconnect last until cleared; garbage and error hit the next reply */
    sim_fault_t sticky;
    int garbage_next, error_next, disconnected;
    sim_fault_t armed; /* fires on the armed_in-th command from now */
    int armed_in;
    double armed_s;
    /* Liconic */
    proto_lines_t lines;
    int opened;
    uint8_t *flags;
    long *dm;
    double climate_set[4], climate_cur[4], climate_at;
    int pending_flag;
    int queued_flag; /* set while busy: the handler takes it when the current step ends */
    int wake_e1_left;
    /* Cytomat (climate_* and pending_flag too): the error and warning registers, the site of
     * the movement under way */
    int cy_error, cy_warning, cy_c, cy_s;
    /* BioTek */
    biotek_cmd_rx_t brx;
    biotek_rect_t rect;
    int nm;
    double reader_temp;
    /* STAR */
    char queue[STAR_QUEUE_MAX][512];
    int nq;
    int tips[16];
    struct sim_plate *deck_cur; /* STAR in a flow: the plate this tip cycle dispenses into */
    bool tip_cycle;             /* tips picked up, no dispense since */
    int source_reagent[16];
    double held_ul[16];
    /* SpectraMax (and lines, nm, reader_temp above) */
    int smax_data; /* a !READ's data waits for !TRANSFER */
    double smax_ready_at, smax_setpoint;
    /* Keyence: a LON without a result yet (it reads until LOFF); the label the control socket
     * put in front (SIM_LABEL_*) */
    int reading, label_set;
    char label[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS) + 256];
    /* Opentrons: the robot-server's runs and deck (dev_opentrons.c) */
    struct sim_ot *ot;
    /* Modbus */
    sim_modbus_t *mb;
    /* Replay: the recording, and the bytes of a request not yet complete */
    struct replay *replay;
    uint8_t *rbuf;
    size_t rlen;
} sim_inst_t;

struct sim {
    uv_loop_t *loop;
    sim_cfg_t cfg;
    sim_world_t world;
    sim_inst_t inst[SIM_INST_MAX];
    uv_pipe_t control;
    int control_open;
    char control_path[512];
    uint64_t t0_ns;
    int open_handles;
    int stopping;
};

/* Makes the directory a pty's symlink goes in when it is missing; 0 or -1 (logged). */
int sim_link_dir_make(const char *id, const char *path);
/* Sends bytes on the instrument's link, with injected garbage first if armed. */
void sim_inst_send(sim_inst_t *in, const void *buf, size_t n);
/* A device received one command (before it answers it): fires a fault armed for it. */
void sim_inst_command(sim_inst_t *in);
/* Device handlers: bytes received from the host. */
void sim_liconic_init(sim_inst_t *in);
void sim_liconic_feed(sim_inst_t *in, const uint8_t *data, size_t n);
/* Brings the climate and the incubation of the plates inside up to the current lab time. */
void sim_liconic_tick(sim_inst_t *in);
void sim_cytomat_init(sim_inst_t *in);
void sim_cytomat_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_cytomat_tick(sim_inst_t *in);
void sim_biotek_init(sim_inst_t *in);
void sim_biotek_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_star_init(sim_inst_t *in);
void sim_star_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_spectramax_init(sim_inst_t *in);
void sim_spectramax_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_keyence_init(sim_inst_t *in);
void sim_keyence_feed(sim_inst_t *in, const uint8_t *data, size_t n);
/* The control socket's label for a reader: a text, null (unreadable) or false (the world's
 * plate); 0, or -1 with why in err. */
int sim_keyence_label(sim_inst_t *in, const json_t *label, char *err, size_t cap);
/* The Opentrons robot-server: HTTP bytes from a client, a new client, the end. */
void sim_opentrons_init(sim_inst_t *in);
void sim_opentrons_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_opentrons_link_open(sim_inst_t *in);
void sim_opentrons_free(sim_inst_t *in);
/* A replayed recording: the link opened (a client connected, a pty made), bytes from the host,
 * and the end (a summary logged, the recording freed). */
void sim_replay_link_open(sim_inst_t *in);
void sim_replay_feed(sim_inst_t *in, const uint8_t *data, size_t n);
void sim_replay_stop(sim_inst_t *in);
/* Modbus controllers run on their own thread each. */
int sim_modbus_start(sim_inst_t *in);
void sim_modbus_stop(sim_inst_t *in);
void sim_modbus_fault(sim_inst_t *in, sim_fault_t f);
#endif
