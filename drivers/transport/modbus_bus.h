/* Modbus buses: one RTU line (rtu:/dev/...) or one TCP connection (tcp://host:port) each, driven
 * through libmodbus by one worker thread per bus that alone owns the modbus_t (libmodbus blocks
 * and its contexts are not thread-safe). The loop thread submits requests; results come back on
 * the loop thread as completion callbacks with a typed result. A dead or silent device only
 * delays requests on its own bus. */
#ifndef LAB_DRIVERS_MODBUS_BUS_H
#define LAB_DRIVERS_MODBUS_BUS_H

#include "drivers/transport/transport.h"

#include <stdint.h>
#include <uv.h>

typedef struct lab_modbus_bus lab_modbus_bus_t;

typedef enum lab_modbus_op {
    LAB_MODBUS_READ_HOLDING = 0, /* function 3 */
    LAB_MODBUS_READ_INPUT,       /* 4 */
    LAB_MODBUS_WRITE_REGISTER,   /* 6: words[0] */
    LAB_MODBUS_WRITE_REGISTERS,  /* 16 */
    LAB_MODBUS_READ_COILS,       /* 1 */
    LAB_MODBUS_WRITE_COIL,       /* 5: bits[0] */
    LAB_MODBUS_WRITE_COILS,      /* 15 */
    LAB_MODBUS_READ_DISCRETE,    /* 2: discrete inputs, bits like coils */
    LAB_MODBUS_OP_COUNT
} lab_modbus_op_t;

typedef struct lab_modbus_request {
    lab_modbus_op_t op;
    int unit;              /* slave/unit id, 0..247 (255 allowed on TCP) */
    int addr;              /* 0..65535 */
    int count;             /* registers or coils; 1 for the single writes */
    const uint16_t *words; /* register writes; copied */
    const uint8_t *bits;   /* coil writes, one 0/1 per coil; copied */
    unsigned timeout_ms;   /* response timeout; 0 means 1000 */
} lab_modbus_request_t;

typedef struct lab_modbus_result {
    /* LAB_OK; LAB_EDEVICE: the device answered with a Modbus exception (exception, its name);
     * LAB_ETIMEDOUT: no answer in time; LAB_ECONN: no connection or it broke; LAB_EPROTO: a
     * malformed answer; LAB_ESHUTDOWN: the bus was closed first. */
    int status;
    int exception;
    const char *exception_name;
    const char *message; /* what went wrong, for logs */
    lab_modbus_op_t op;
    int unit, addr, count;
    const uint16_t *words; /* register reads: count words */
    const uint8_t *bits;   /* coil and discrete input reads: count 0/1 values */
} lab_modbus_result_t;

typedef void (*lab_modbus_done_cb)(lab_modbus_bus_t *bus, const lab_modbus_result_t *res,
                                   void *arg);
typedef void (*lab_modbus_state_cb)(lab_modbus_bus_t *bus, lab_transport_state_t state, int err,
                                    const char *reason, void *user);

typedef struct lab_modbus_settings {
    const char *uri; /* tcp://host:port or rtu:/dev/ttyX; copied */
    int baud;        /* RTU: 9600 8N1 unless set */
    int data_bits;
    lab_parity_t parity;
    int stop_bits;
    unsigned connect_timeout_ms; /* 0 means 3000 */
    unsigned retry_min_ms;       /* 0 means 200 */
    unsigned retry_max_ms;       /* 0 means 10000 */
} lab_modbus_settings_t;

void lab_modbus_settings_init(lab_modbus_settings_t *s);
/* "ILLEGAL DATA ADDRESS" for 2, and so on; "UNKNOWN EXCEPTION" otherwise. */
const char *lab_modbus_exception_name(int code);
const char *lab_modbus_op_name(lab_modbus_op_t op);

/* Checks the settings and starts the worker, which connects at once: buses are meant to be
 * created at start-up, while file descriptors are still low (libmodbus before 3.1.12 uses
 * select(), which cannot wait on an fd >= FD_SETSIZE; such an fd is refused with a clear error). */
int lab_modbus_bus_new(uv_loop_t *loop, const lab_modbus_settings_t *s, const char *id,
                       lab_modbus_state_cb on_state, void *user, lab_modbus_bus_t **out,
                       char *err_msg, size_t err_len);
/* Queue a request; cb runs later on the loop thread. LAB_EINVAL for a malformed request,
 * LAB_ESTATE once closing. */
int lab_modbus_bus_submit(lab_modbus_bus_t *bus, const lab_modbus_request_t *req,
                          lab_modbus_done_cb cb, void *arg);
/* Stops and joins the worker (an in-flight TCP request is cut short; an RTU request or a TCP
 * connection attempt may take up to its timeout), delivers finished results, completes the rest
 * with LAB_ESHUTDOWN, all before returning. The memory is freed in a later loop iteration. */
void lab_modbus_bus_close(lab_modbus_bus_t *bus);
const char *lab_modbus_bus_id(const lab_modbus_bus_t *bus);

#endif
