/* Simulated Modbus TCP temperature controllers (Omega CN7500, Eurotherm 3200), one libmodbus
 * server thread each, serving the register map of protocols/modbus_maps.h. Thermal model, first
 * order in lab time: while running PV -> SV with time constant sim_tau, stopped PV -> sim_ambient.
 * Run/stop is the coil 0x0814 (CN7500) or program_status (Eurotherm: 1 = run; the 3200 without a
 * program is always regulating, so any value other than 0 = reset runs). Faults: timeout stops
 * answering, garbage answers the next request with random bytes, error answers it with exception
 * 4 (server device failure), disconnect closes the client and refuses new ones until cleared. */
#include <errno.h>
#include <math.h>
#include <modbus.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>
#include "protocols/modbus_maps.h"
#include "sim/inst.h"
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
    uint16_t pv_addr, sv_addr, run_addr;
    int run_is_coil;
};

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
    if (modbus_scaled_to_word(mb->pv, 1, 1, &w) == PROTO_OK)
        mb->map->tab_registers[mb->pv_addr] = w;
}

static void *serve(void *arg)
{
    struct sim_modbus *mb = arg;
    uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
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
            model_step(mb);
            if (atomic_load(&mb->fault) == SIM_FAULT_TIMEOUT)
                continue;
            if (atomic_exchange(&mb->garbage_next, 0)) {
                uint8_t junk[9];
                for (size_t i = 0; i < sizeof junk; i++)
                    junk[i] = (uint8_t)sim_rand_next(&mb->in->rng);
                if (write(fd, junk, sizeof junk) < 0)
                    break;
                continue;
            }
            if (atomic_exchange(&mb->error_next, 0)) {
                modbus_reply_exception(mb->ctx, req, MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE);
                continue;
            }
            modbus_reply(mb->ctx, req, n, mb->map);
        }
        close(fd);
        modbus_set_socket(mb->ctx, -1);
    }
    return NULL;
}

int sim_modbus_start(sim_inst_t *in)
{
    struct sim_modbus *mb = calloc(1, sizeof *mb);
    mb->in = in;
    mb->listen_fd = -1;
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
    mb->run_is_coil = run->space == MODBUS_COIL;
    mb->map = modbus_mapping_new(0x10000, 0, 0x10000, 0);
    mb->ctx = modbus_new_tcp(in->cfg->host, in->cfg->modbus_port);
    if (!mb->map || !mb->ctx)
        goto fail;
    mb->pv = in->cfg->ambient;
    mb->at = sim_lab_now(in->sim);
    uint16_t w;
    if (modbus_scaled_to_word(in->cfg->ambient, 1, 1, &w) == PROTO_OK)
        mb->map->tab_registers[mb->pv_addr] = mb->map->tab_registers[mb->sv_addr] = w;
    if (!mb->run_is_coil)
        mb->map->tab_registers[mb->run_addr] = 1;
    mb->listen_fd = modbus_tcp_listen(mb->ctx, 1);
    if (mb->listen_fd < 0) {
        sim_error("modbus", "%s: listen tcp://%s:%d: %s", in->cfg->id, in->cfg->host,
                  in->cfg->modbus_port, modbus_strerror(errno));
        goto fail;
    }
    in->mb = mb;
    if (pthread_create(&mb->thread, NULL, serve, mb)) {
        in->mb = NULL;
        goto fail;
    }
    sim_info("modbus", "%s: serving tcp://%s:%d", in->cfg->id, in->cfg->host, in->cfg->modbus_port);
    return 0;
fail:
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
    close(mb->listen_fd);
    modbus_close(mb->ctx);
    modbus_free(mb->ctx);
    modbus_mapping_free(mb->map);
    free(mb);
    in->mb = NULL;
}
