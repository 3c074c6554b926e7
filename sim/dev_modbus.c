/* Simulated Modbus temperature controllers (Omega CN7500, Eurotherm 3200), one libmodbus server
 * thread each, serving the register map of protocols/modbus_maps.h over Modbus TCP
 * (modbus = tcp://host:port) or Modbus RTU on a pty (modbus = rtu:PATH, answering its unit only,
 * frames with CRC). Thermal model, first order in lab time: while running PV -> SV with time
 * constant sim_tau, stopped PV -> sim_ambient. Run/stop is the bit 0x0814 (CN7500: written as a
 * coil with function 05, read as a discrete input with 02, as the exchange recorded on a real
 * CN7500 does) or program_status (Eurotherm: 1 = run; the 3200 without a program is always
 * regulating, so any value other than 0 = reset runs). The CN7500's output 1 (0x1012, % with one
 * decimal) is a proportional output over a band of CN_BAND_C below the set point while running,
 * 0 when stopped. The CN7500 answers only the function codes the recording and the CN7500/DTB
 * documentation show (02, 03, 05, 06, 16); any other gets exception 1 (illegal function), as a
 * driver that strays from the evidence would at first contact with the instrument. Faults:
 * timeout stops answering, garbage answers the next request with random bytes, error answers it
 * with exception 4 (server device failure), disconnect closes the TCP client and refuses new ones
 * until cleared (on RTU, a line has no connection to drop: the unit falls silent). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <modbus.h>
#include <pthread.h>
#include <pty.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include "protocols/modbus_maps.h"
#include "sim/device.h"
#include "sim/log.h"

struct sim_modbus {
    sim_inst_t *in;
    modbus_t *ctx;
    modbus_mapping_t *map;
    int listen_fd;
    pthread_t thread;
    atomic_int stop;
    atomic_int fault; /* sticky: SIM_FAULT_TIMEOUT / SIM_FAULT_DISCONNECT / NONE */
    atomic_int error_next, garbage_next;
    double pv, at;
    uint16_t pv_addr, sv_addr, run_addr, out_addr;
    int run_is_coil, has_out;
    int rtu, master, slave; /* RTU: the pty; labloopd opens the slave through the symlink */
};

/* The CN7500's simulated output 1: 100 % at CN_BAND_C or more below the set point. */
#define CN_BAND_C 100.0

static int wait_fd(int fd, atomic_int *stop)
{
    while (!atomic_load(stop)) {
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(fd, &rs);
        struct timeval tv = {0, 100000};
        int r = select(fd + 1, &rs, NULL, NULL, &tv);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

static void model_step(struct sim_modbus *mb)
{
    double now = sim_lab_now(mb->in->sim), dt = now - mb->at;
    mb->at = now;
    int running = mb->run_is_coil ? mb->map->tab_bits[mb->run_addr]
                                  : mb->map->tab_registers[mb->run_addr] != 0;
    double target =
        running ? (int16_t)mb->map->tab_registers[mb->sv_addr] / 10.0 : mb->in->cfg->ambient;
    if (dt > 0)
        mb->pv += (target - mb->pv) * (1 - exp(-dt / mb->in->cfg->tau));
    uint16_t w;
    if (modbus_scaled_to_word(mb->pv, 1, 1, &w) == LAB_OK)
        mb->map->tab_registers[mb->pv_addr] = w;
    if (mb->run_is_coil) /* one bit, read as a discrete input, written as a coil */
        mb->map->tab_input_bits[mb->run_addr] = mb->map->tab_bits[mb->run_addr];
    if (mb->has_out) {
        /* from the words as they are served, so that output 1 agrees with PV and SV */
        double pv = (int16_t)mb->map->tab_registers[mb->pv_addr] / 10.0;
        double out = running ? (target - pv) / CN_BAND_C * 100 : 0;
        out = out < 0 ? 0 : out > 100 ? 100 : out;
        if (modbus_scaled_to_word(out, 1, 0, &w) == LAB_OK)
            mb->map->tab_registers[mb->out_addr] = w;
    }
}

/* Function codes the CN7500 is known to answer; 0 for another one (see the header). */
static int cn7500_function_ok(int fc)
{
    return fc == 2 || fc == 3 || fc == 5 || fc == 6 || fc == 16;
}

/* One request received (n bytes in req): answers it, or not, as the faults say. -1 when the link
 * broke. */
static int answer(struct sim_modbus *mb, int fd, const uint8_t *req, int n)
{
    model_step(mb);
    if (atomic_load(&mb->fault) != SIM_FAULT_NONE) /* timeout, and disconnect on RTU */
        return 0;
    if (atomic_exchange(&mb->garbage_next, 0)) {
        uint8_t junk[9];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)sim_rand_next(&mb->in->rng);
        return write(fd, junk, sizeof junk) < 0 ? -1 : 0;
    }
    if (atomic_exchange(&mb->error_next, 0)) {
        modbus_reply_exception(mb->ctx, req, MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE);
        return 0;
    }
    int fc = req[modbus_get_header_length(mb->ctx)];
    if (mb->in->cfg->map == MODBUS_DEV_CN7500 && !cn7500_function_ok(fc)) {
        sim_info("modbus", "%s: function %d refused (illegal function)", mb->in->cfg->id, fc);
        modbus_reply_exception(mb->ctx, req, MODBUS_EXCEPTION_ILLEGAL_FUNCTION);
        return 0;
    }
    modbus_reply(mb->ctx, req, n, mb->map);
    return 0;
}

/* RTU: one line, requests for other units ignored (libmodbus drops them and bad CRCs). */
static void serve_rtu(struct sim_modbus *mb)
{
    uint8_t req[MODBUS_RTU_MAX_ADU_LENGTH];
    while (!atomic_load(&mb->stop)) {
        if (wait_fd(mb->master, &mb->stop) <= 0)
            continue;
        int n = modbus_receive(mb->ctx, req);
        if (n <= 0) { /* not for this unit, a bad CRC, or a frame cut short: wait for the next */
            if (n < 0 && errno != EMBBADCRC && errno != ETIMEDOUT && errno != EMBBADDATA)
                sim_info("modbus", "%s: receive: %s", mb->in->cfg->id, modbus_strerror(errno));
            continue;
        }
        answer(mb, mb->master, req, n);
    }
}

static void *serve(void *arg)
{
    struct sim_modbus *mb = arg;
    uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
    if (mb->rtu) {
        serve_rtu(mb);
        return NULL;
    }
    while (!atomic_load(&mb->stop)) {
        if (wait_fd(mb->listen_fd, &mb->stop) <= 0)
            continue;
        int fd = modbus_tcp_accept(mb->ctx, &mb->listen_fd);
        if (fd < 0)
            continue;
        if (atomic_load(&mb->fault) == SIM_FAULT_DISCONNECT) {
            close(fd);
            modbus_set_socket(mb->ctx, -1);
            continue;
        }
        while (!atomic_load(&mb->stop)) {
            int w = wait_fd(fd, &mb->stop);
            if (atomic_load(&mb->fault) == SIM_FAULT_DISCONNECT)
                break;
            if (w <= 0) {
                if (w < 0)
                    break;
                continue;
            }
            int n = modbus_receive(mb->ctx, req);
            if (n < 0)
                break;
            if (n == 0)
                continue;
            if (answer(mb, fd, req, n) < 0)
                break;
        }
        close(fd);
        modbus_set_socket(mb->ctx, -1);
    }
    return NULL;
}

/* The RTU line: a pty whose slave labloopd opens through the symlink at the configured path (an
 * existing symlink is replaced, anything else refused), raw. libmodbus reads and writes the master
 * side directly: the context is never connected, so it never sets the pty's modes. */
static int rtu_open(struct sim_modbus *mb)
{
    const sim_inst_cfg_t *cfg = mb->in->cfg;
    struct stat st;
    if (sim_link_dir_make(cfg->id, cfg->port))
        return -1;
    if (lstat(cfg->port, &st) == 0) {
        if (!S_ISLNK(st.st_mode)) {
            sim_error("modbus", "%s: %s exists and is not a symlink; not replacing it", cfg->id,
                      cfg->port);
            return -1;
        }
        unlink(cfg->port);
    }
    if (openpty(&mb->master, &mb->slave, NULL, NULL, NULL) < 0) {
        sim_error("modbus", "%s: openpty: %s", cfg->id, strerror(errno));
        return -1;
    }
    struct termios tio;
    tcgetattr(mb->slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(mb->slave, TCSANOW, &tio);
    fcntl(mb->master, F_SETFD, FD_CLOEXEC);
    fcntl(mb->slave, F_SETFD, FD_CLOEXEC);
    const char *name = ttyname(mb->slave);
    if (!name || symlink(name, cfg->port) < 0) {
        sim_error("modbus", "%s: symlink %s: %s", cfg->id, cfg->port, strerror(errno));
        return -1;
    }
    mb->ctx = modbus_new_rtu(name, 9600, 'E', 8, 1);
    if (!mb->ctx || modbus_set_slave(mb->ctx, cfg->unit) < 0 ||
        modbus_set_socket(mb->ctx, mb->master) < 0)
        return -1;
    sim_info("modbus", "%s: serving rtu:%s -> %s, unit %d", cfg->id, cfg->port, name, cfg->unit);
    return 0;
}

static void rtu_close(struct sim_modbus *mb)
{
    if (mb->master >= 0)
        close(mb->master);
    if (mb->slave >= 0)
        close(mb->slave);
    mb->master = mb->slave = -1;
    unlink(mb->in->cfg->port);
}

int sim_modbus_start(sim_inst_t *in)
{
    struct sim_modbus *mb = calloc(1, sizeof *mb);
    mb->in = in;
    mb->listen_fd = -1;
    mb->master = mb->slave = -1;
    mb->rtu = in->cfg->modbus_rtu;
    const modbus_reg_t *pv = modbus_map_find(in->cfg->map, "pv");
    const modbus_reg_t *sv =
        modbus_map_find(in->cfg->map, in->cfg->map == MODBUS_DEV_CN7500 ? "sv" : "target_setpoint");
    const modbus_reg_t *run =
        modbus_map_find(in->cfg->map, in->cfg->map == MODBUS_DEV_CN7500 ? "run" : "program_status");
    if (!pv || !sv || !run)
        goto fail;
    mb->pv_addr = pv->addr;
    mb->sv_addr = sv->addr;
    mb->run_addr = run->addr;
    mb->run_is_coil = run->space != MODBUS_HOLDING;
    const modbus_reg_t *out =
        in->cfg->map == MODBUS_DEV_CN7500 ? modbus_map_find(in->cfg->map, "output1") : NULL;
    mb->has_out = out != NULL;
    mb->out_addr = out ? out->addr : 0;
    mb->map = modbus_mapping_new(0x10000, 0x10000, 0x10000, 0);
    if (!mb->map)
        goto fail;
    mb->pv = in->cfg->ambient;
    mb->at = sim_lab_now(in->sim);
    uint16_t w;
    if (modbus_scaled_to_word(in->cfg->ambient, 1, 1, &w) == LAB_OK)
        mb->map->tab_registers[mb->pv_addr] = mb->map->tab_registers[mb->sv_addr] = w;
    if (!mb->run_is_coil)
        mb->map->tab_registers[mb->run_addr] = 1;
    if (mb->rtu) {
        if (rtu_open(mb))
            goto fail;
        goto serve;
    }
    mb->ctx = modbus_new_tcp(in->cfg->host, in->cfg->modbus_port);
    if (!mb->ctx)
        goto fail;
    mb->listen_fd = modbus_tcp_listen(mb->ctx, 1);
    if (mb->listen_fd < 0) {
        sim_error("modbus", "%s: listen tcp://%s:%d: %s", in->cfg->id, in->cfg->host,
                  in->cfg->modbus_port, modbus_strerror(errno));
        goto fail;
    }
    sim_info("modbus", "%s: serving tcp://%s:%d", in->cfg->id, in->cfg->host, in->cfg->modbus_port);
serve:
    in->mb = mb;
    if (pthread_create(&mb->thread, NULL, serve, mb)) {
        in->mb = NULL;
        goto fail;
    }
    return 0;
fail:
    if (mb->rtu)
        rtu_close(mb);
    if (mb->listen_fd >= 0)
        close(mb->listen_fd);
    if (mb->ctx)
        modbus_free(mb->ctx);
    if (mb->map)
        modbus_mapping_free(mb->map);
    free(mb);
    return -1;
}

void sim_modbus_fault(sim_inst_t *in, sim_fault_t f)
{
    struct sim_modbus *mb = in->mb;
    if (!mb)
        return;
    switch (f) {
    case SIM_FAULT_NONE:
        atomic_store(&mb->fault, 0);
        atomic_store(&mb->error_next, 0);
        atomic_store(&mb->garbage_next, 0);
        break;
    case SIM_FAULT_GARBAGE:
        atomic_store(&mb->garbage_next, 1);
        break;
    case SIM_FAULT_ERROR:
        atomic_store(&mb->error_next, 1);
        break;
    case SIM_FAULT_TIMEOUT:
    case SIM_FAULT_DISCONNECT:
        atomic_store(&mb->fault, (int)f);
        break;
    }
}

void sim_modbus_stop(sim_inst_t *in)
{
    struct sim_modbus *mb = in->mb;
    if (!mb)
        return;
    atomic_store(&mb->stop, 1);
    pthread_join(mb->thread, NULL);
    if (mb->rtu) {
        rtu_close(mb); /* the context was never connected: nothing of the pty's to restore */
    } else {
        close(mb->listen_fd);
        modbus_close(mb->ctx);
    }
    modbus_free(mb->ctx);
    modbus_mapping_free(mb->map);
    free(mb);
    in->mb = NULL;
}
