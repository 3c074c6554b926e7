/* labloop-sim: the digital twin of labloop's instruments. Owns the configuration it shares with
 * labloopd ([labloop] time_scale and the world's sim_* keys, and the [instrument ID] sections), the
 * event loop, the serial instruments served on ptys (or TCP), the Modbus controllers (TCP, or RTU
 * on a pty), fault
 * injection and the control socket. */
#ifndef LAB_SIM_SIM_H
#define LAB_SIM_SIM_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "protocols/cytomat.h"
#include "protocols/liconic.h"
#include "sim/world.h"

typedef struct sim sim_t;
struct replay;

typedef enum sim_driver {
    SIM_LICONIC,
    SIM_BIOTEK,
    SIM_STAR,
    SIM_MODBUS_TEMP,
    SIM_SPECTRAMAX,
    SIM_KEYENCE,
    SIM_CYTOMAT,
    SIM_OPENTRONS,
} sim_driver_t;

typedef enum sim_fault {
    SIM_FAULT_NONE,
    SIM_FAULT_TIMEOUT,
    SIM_FAULT_GARBAGE,
    SIM_FAULT_ERROR,
    SIM_FAULT_DISCONNECT,
} sim_fault_t;

#define SIM_INST_MAX 32

typedef struct sim_inst_cfg {
    char id[64];
    sim_driver_t driver;
    char port[512];  /* pty symlink path (modbus rtu:PATH too), or empty with tcp_port set */
    char host[128];  /* tcp:// serial, or the modbus server */
    int tcp_port;    /* serial over TCP */
    int modbus_port; /* modbus-temperature over TCP; 0 with modbus_rtu */
    int modbus_rtu;  /* modbus-temperature over RTU on the pty at port */
    int unit;        /* modbus: the unit (slave) address an RTU line answers for */
    int map;         /* modbus_device_t */
    int wells;       /* reader: 96 or 384 */
    /* reader: barcode of the plate in the tray; STAR: plate on the deck */
    char plate[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)];
    char reagents[256]; /* STAR: comma-separated reagent names by source column */
    char from[64];      /* Liconic: the STAR whose deck plate a load with an empty station takes */
    char to[64];        /* Liconic: the reader whose queue an unloaded plate slides into */
    int error_code;     /* the device error answered on an injected "error" fault */
    /* Liconic: each cassette's rack (rack_type with cassettes, or rack_types), the DM23/DM25 a
     * transfer to or from it needs */
    liconic_cassettes_t cassettes;
    char rack_type[64], rack_types[1024];
    int ncassettes; /* cassettes = N; 0 when absent */
    int wake_e1;    /* Liconic: E1 to a bare CR, and to the first wake_e1 CR handshakes */
    char at[64];    /* barcode reader: the instrument whose plate position it sees */
    int keyence_sr; /* barcode reader: sim_mode = sr (OK/ER answers, no motor) */
    int flex;       /* Opentrons: sim_model = flex (robot_model "OT-3 Standard") */
    double step_s;  /* lab seconds a mechanical step takes */
    /* Cytomat: the model (cytomat_model_t, from model =), and its cassettes (rack_type with
     * cassettes, or rack_types) */
    char cy_model_name[24];
    int cy_model;
    cytomat_cassettes_t cy_cassettes;
    double ambient; /* modbus: degC */
    double tau;     /* modbus: lab seconds of the thermal time constant */
    int line;
    struct replay *replay; /* --replay: the recording this instrument plays, owned by the sim */
} sim_inst_cfg_t;

typedef struct sim_cfg {
    double time_scale;
    uint64_t seed;
    double noise;
    sim_design_t design; /* sim_design, sim_design_max: n = 0 when absent */
    int replay_strict;   /* --strict: stop at the first request a recording never saw */
    sim_inst_cfg_t inst[SIM_INST_MAX];
    int n;
} sim_cfg_t;

/* Reads the file; on error writes "file:line: reason" into err and returns -1. */
int sim_cfg_load(const char *path, sim_cfg_t *cfg, char *err, size_t errcap);

/* Creates every instrument and the control socket on loop. */
int sim_start(uv_loop_t *loop, const sim_cfg_t *cfg, const char *control_path, sim_t **out);
/* Injects a fault; returns 0 or -1 with a reason in err. at_command 0: now (garbage and error
 * hit the next reply); N > 0: armed for the Nth command the instrument receives from now, which
 * it hits (its reply garbled, an error instead, never answered, or the link dropped before the
 * reply); only instruments that frame commands (the STAR, the Opentrons) count them. */
int sim_fault(sim_t *s, const char *id, const char *fault, double seconds, int at_command,
              char *err, size_t cap);
/* Closes everything (removes the symlinks); the loop then runs dry. */
void sim_stop(sim_t *s);
double sim_lab_now(const sim_t *s);
/* Requests that replayed recordings never saw, since the program started. */
long sim_replay_unseen_total(void);
#endif
