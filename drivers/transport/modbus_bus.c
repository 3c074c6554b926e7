/* Modbus bus workers: the request queue, the worker thread that owns the libmodbus context and
 * its reconnection, and the delivery of typed results to the loop thread through a lab_tq_t. */
#include "drivers/transport/modbus_bus.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tq.h"
#include "drivers/transport/wirerec.h"

#include <errno.h>
#include <fcntl.h>
#include <modbus/modbus.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#define SUB "modbus"

typedef struct mb_job {
    lab_tq_item_t item; /* first: the tq hands it back */
    struct mb_job *next;
    lab_modbus_bus_t *bus;
    lab_modbus_request_t req;
    lab_modbus_done_cb cb;
    void *arg;
    lab_modbus_result_t res;
    char msg[160];
    uint16_t *words; /* write values or read results */
    uint8_t *bits;
} mb_job_t;

typedef struct mb_event {
    lab_tq_item_t item;
    lab_modbus_bus_t *bus;
    lab_transport_state_t state;
    int err;
    char reason[200];
} mb_event_t;

struct lab_modbus_bus {
    uv_loop_t *loop;
    char *id;
    char *uri;
    char *host, *service, *device; /* tcp host/port or rtu device */
    lab_modbus_settings_t set;
    lab_modbus_state_cb on_state;
    void *user;
    lab_tq_t tq;
    int closing;
    lab_wirerec_t *rec; /* the owner's wire recorder (a reference), or NULL; appended to by the
                         * worker, which alone sees the requests and answers in wire order */

    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t cond;
    /* Under lock: */
    mb_job_t *head, *tail;
    int stop;
    int sock; /* the connected fd, so that close can cut a blocked request short */

    /* Worker thread only: */
    modbus_t *ctx;
    int connected;
    lab_transport_state_t reported;
    unsigned backoff_ms;
    uint64_t rng;
};

static const char *const exception_names[] = {
    [MODBUS_EXCEPTION_ILLEGAL_FUNCTION] = "ILLEGAL FUNCTION",
    [MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS] = "ILLEGAL DATA ADDRESS",
    [MODBUS_EXCEPTION_ILLEGAL_DATA_VALUE] = "ILLEGAL DATA VALUE",
    [MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE] = "SERVER DEVICE FAILURE",
    [MODBUS_EXCEPTION_ACKNOWLEDGE] = "ACKNOWLEDGE",
    [MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY] = "SERVER DEVICE BUSY",
    [MODBUS_EXCEPTION_NEGATIVE_ACKNOWLEDGE] = "NEGATIVE ACKNOWLEDGE",
    [MODBUS_EXCEPTION_MEMORY_PARITY] = "MEMORY PARITY ERROR",
    [MODBUS_EXCEPTION_GATEWAY_PATH] = "GATEWAY PATH UNAVAILABLE",
    [MODBUS_EXCEPTION_GATEWAY_TARGET] = "GATEWAY TARGET DEVICE FAILED TO RESPOND",
};

const char *lab_modbus_exception_name(int code)
{
    if (code > 0 && (size_t)code < sizeof exception_names / sizeof exception_names[0] &&
        exception_names[code])
        return exception_names[code];
    return "UNKNOWN EXCEPTION";
}

/* One row per operation: limits from the Modbus application protocol spec (V1.1b3, 6.x). */
typedef int (*mb_exec_fn)(modbus_t *ctx, mb_job_t *j);

static int exec_read_holding(modbus_t *c, mb_job_t *j)
{
    return modbus_read_registers(c, j->req.addr, j->req.count, j->words);
}
static int exec_read_input(modbus_t *c, mb_job_t *j)
{
    return modbus_read_input_registers(c, j->req.addr, j->req.count, j->words);
}
static int exec_write_register(modbus_t *c, mb_job_t *j)
{
    return modbus_write_register(c, j->req.addr, j->words[0]);
}
static int exec_write_registers(modbus_t *c, mb_job_t *j)
{
    return modbus_write_registers(c, j->req.addr, j->req.count, j->words);
}
static int exec_read_coils(modbus_t *c, mb_job_t *j)
{
    return modbus_read_bits(c, j->req.addr, j->req.count, j->bits);
}
static int exec_read_discrete(modbus_t *c, mb_job_t *j)
{
    return modbus_read_input_bits(c, j->req.addr, j->req.count, j->bits);
}
static int exec_write_coil(modbus_t *c, mb_job_t *j)
{
    return modbus_write_bit(c, j->req.addr, j->bits[0]);
}
static int exec_write_coils(modbus_t *c, mb_job_t *j)
{
    return modbus_write_bits(c, j->req.addr, j->req.count, j->bits);
}

static const struct {
    const char *name;
    int max_count;
    int writes;  /* takes values from the request */
    int on_bits; /* coils rather than registers */
    mb_exec_fn exec;
} ops[LAB_MODBUS_OP_COUNT] = {
    [LAB_MODBUS_READ_HOLDING] = {"read_holding", 125, 0, 0, exec_read_holding},
    [LAB_MODBUS_READ_INPUT] = {"read_input", 125, 0, 0, exec_read_input},
    [LAB_MODBUS_WRITE_REGISTER] = {"write_register", 1, 1, 0, exec_write_register},
    [LAB_MODBUS_WRITE_REGISTERS] = {"write_registers", 123, 1, 0, exec_write_registers},
    [LAB_MODBUS_READ_COILS] = {"read_coils", 2000, 0, 1, exec_read_coils},
    [LAB_MODBUS_WRITE_COIL] = {"write_coil", 1, 1, 1, exec_write_coil},
    [LAB_MODBUS_WRITE_COILS] = {"write_coils", 1968, 1, 1, exec_write_coils},
    [LAB_MODBUS_READ_DISCRETE] = {"read_discrete_inputs", 2000, 0, 1, exec_read_discrete},
};

const char *lab_modbus_op_name(lab_modbus_op_t op)
{
    return (unsigned)op < LAB_MODBUS_OP_COUNT ? ops[op].name : "?";
}

const char *lab_modbus_bus_id(const lab_modbus_bus_t *bus)
{
    return bus->id;
}

void lab_modbus_settings_init(lab_modbus_settings_t *s)
{
    memset(s, 0, sizeof *s);
    s->baud = 9600;
    s->data_bits = 8;
    s->stop_bits = 1;
}

/* ---- loop thread side ---- */

static void job_deliver(lab_tq_item_t *item)
{
    mb_job_t *j = (mb_job_t *)item;
    if (j->cb)
        j->cb(j->bus, &j->res, j->arg);
    free(j->words);
    free(j->bits);
    free(j);
}

static void event_deliver(lab_tq_item_t *item)
{
    mb_event_t *e = (mb_event_t *)item;
    lab_modbus_bus_t *bus = e->bus;
    if (bus->on_state && !bus->closing)
        bus->on_state(bus, e->state, e->err, e->err ? e->reason : NULL, bus->user);
    free(e);
}

static void job_finish(mb_job_t *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_finish(mb_job_t *j, int status, const char *fmt, ...)
{
    j->res.status = status;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->msg, sizeof j->msg, fmt, ap);
        va_end(ap);
        j->res.message = j->msg;
    }
}

int lab_modbus_bus_submit(lab_modbus_bus_t *bus, const lab_modbus_request_t *req,
                          lab_modbus_done_cb cb, void *arg)
{
    if (bus->closing)
        return LAB_ESTATE;
    if ((unsigned)req->op >= LAB_MODBUS_OP_COUNT || req->unit < 0 || req->unit > 255 ||
        req->addr < 0 || req->count < 1 || req->count > ops[req->op].max_count ||
        req->addr + req->count > 65536)
        return LAB_EINVAL;
    if (ops[req->op].writes && !(ops[req->op].on_bits ? (void *)req->bits : (void *)req->words))
        return LAB_EINVAL;
    mb_job_t *j = LAB_NEW(mb_job_t);
    j->item.fn = job_deliver;
    j->bus = bus;
    j->req = *req;
    j->req.words = NULL;
    j->req.bits = NULL;
    if (!j->req.timeout_ms)
        j->req.timeout_ms = 1000;
    j->cb = cb;
    j->arg = arg;
    size_t n = (size_t)req->count;
    if (ops[req->op].on_bits) {
        j->bits = lab_calloc(n, 1);
        if (req->bits)
            for (size_t i = 0; i < n; i++)
                j->bits[i] = req->bits[i] ? 1 : 0;
    } else {
        j->words = lab_calloc(n, sizeof *j->words);
        if (req->words)
            memcpy(j->words, req->words, n * sizeof *j->words);
    }
    j->res.op = req->op;
    j->res.unit = req->unit;
    j->res.addr = req->addr;
    j->res.count = req->count;
    uv_mutex_lock(&bus->lock);
    if (bus->tail)
        bus->tail->next = j;
    else
        bus->head = j;
    bus->tail = j;
    uv_mutex_unlock(&bus->lock);
    uv_cond_signal(&bus->cond); /* after unlocking: the woken worker does not block on the lock */
    return LAB_OK;
}

/* ---- worker thread ---- */

static void push_event(lab_modbus_bus_t *bus, lab_transport_state_t state, int err,
                       const char *reason)
{
    if (bus->reported == state)
        return;
    bus->reported = state;
    if (state == LAB_TRANSPORT_OPEN)
        lab_wirerec_event(bus->rec, "open", bus->uri);
    else if (state == LAB_TRANSPORT_OFFLINE)
        lab_wirerec_event(bus->rec, "offline", reason);
    mb_event_t *e = LAB_NEW(mb_event_t);
    e->item.fn = event_deliver;
    e->bus = bus;
    e->state = state;
    e->err = err;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
    lab_tq_push(&bus->tq, &e->item);
}

/* Connect the TCP socket ourselves (poll() has no FD_SETSIZE limit) and hand it to libmodbus
 * only if its select() can wait on it. The socket, or LAB_ECONN with why in reason (so does
 * rtu_connect). */
static int tcp_connect(lab_modbus_bus_t *bus, char *reason, size_t n)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(bus->host, bus->service, &hints, &res);
    if (rc != 0) {
        snprintf(reason, n, "resolve %s: %s", bus->host, gai_strerror(rc));
        return LAB_ECONN;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(reason, n, "socket: %s", strerror(errno));
            continue;
        }
        if (fd >= FD_SETSIZE) {
            snprintf(reason, n,
                     "socket fd %d >= FD_SETSIZE (%d): libmodbus %s cannot select() on it; create "
                     "Modbus buses at start-up",
                     fd, FD_SETSIZE, LIBMODBUS_VERSION_STRING);
            close(fd);
            fd = -1;
            break;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            snprintf(reason, n, "connect %s:%s: %s", bus->host, bus->service, strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        rc = poll(&p, 1, (int)bus->set.connect_timeout_ms);
        if (rc == 1)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (rc != 1 || err) {
            snprintf(reason, n, "connect %s:%s: %s", bus->host, bus->service,
                     rc == 0 ? "timed out" : strerror(err ? err : errno));
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return LAB_ECONN;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); /* libmodbus expects blocking I/O */
    modbus_set_socket(bus->ctx, fd);
    return fd;
}

static int rtu_connect(lab_modbus_bus_t *bus, char *reason, size_t n)
{
    if (modbus_connect(bus->ctx) < 0) {
        snprintf(reason, n, "open %s: %s", bus->device, modbus_strerror(errno));
        return LAB_ECONN;
    }
    int fd = modbus_get_socket(bus->ctx);
    if (fd >= FD_SETSIZE) {
        snprintf(reason, n,
                 "fd %d >= FD_SETSIZE (%d): libmodbus %s cannot select() on it; create Modbus "
                 "buses at start-up",
                 fd, FD_SETSIZE, LIBMODBUS_VERSION_STRING);
        modbus_close(bus->ctx);
        return LAB_ECONN;
    }
    return fd;
}

static void worker_disconnect(lab_modbus_bus_t *bus)
{
    uv_mutex_lock(&bus->lock);
    bus->sock = -1;
    modbus_close(bus->ctx);
    uv_mutex_unlock(&bus->lock);
    bus->connected = 0;
}

/* Classify libmodbus's errno into the typed result; true if the connection must be dropped. */
static int job_fail(lab_modbus_bus_t *bus, mb_job_t *j, int e)
{
    int code = e - MODBUS_ENOBASE;
    if (code >= MODBUS_EXCEPTION_ILLEGAL_FUNCTION && code <= MODBUS_EXCEPTION_GATEWAY_TARGET) {
        j->res.exception = code;
        j->res.exception_name = lab_modbus_exception_name(code);
        job_finish(j, LAB_EDEVICE, "exception %d (%s)", code, j->res.exception_name);
        return 0;
    }
    if (e == ETIMEDOUT) {
        job_finish(j, LAB_ETIMEDOUT, "no answer within %u ms", j->req.timeout_ms);
        modbus_flush(bus->ctx); /* a late answer must not be taken for the next request's */
        return 0;
    }
    if (e > MODBUS_ENOBASE) {
        job_finish(j, LAB_EPROTO, "%s", modbus_strerror(e));
        modbus_flush(bus->ctx);
        return 0;
    }
    job_finish(j, LAB_ECONN, "%s", modbus_strerror(e));
    return 1;
}

/* ---- wire recording: PDUs (function code and data; no address, CRC or MBAP header) ----
 * libmodbus hides its frames, so the PDUs are built from the request and from the answer it
 * decoded and checked: exact for requests, reads and exceptions; a write's answer is the echo the
 * protocol prescribes (libmodbus checked its function and quantity); padding bits of a bit
 * read's last byte are recorded as 0. */

static int record_fc(lab_modbus_op_t op)
{
    switch (op) {
    case LAB_MODBUS_READ_HOLDING:
        return 3;
    case LAB_MODBUS_READ_INPUT:
        return 4;
    case LAB_MODBUS_WRITE_REGISTER:
        return 6;
    case LAB_MODBUS_WRITE_REGISTERS:
        return 16;
    case LAB_MODBUS_READ_COILS:
        return 1;
    case LAB_MODBUS_READ_DISCRETE:
        return 2;
    case LAB_MODBUS_WRITE_COIL:
        return 5;
    case LAB_MODBUS_WRITE_COILS:
        return 15;
    default:
        return -1;
    }
}

static size_t put_bits(uint8_t *p, const uint8_t *bits, int count)
{
    size_t nb = ((size_t)count + 7) / 8;
    memset(p, 0, nb);
    for (int i = 0; i < count; i++)
        if (bits[i])
            p[i / 8] |= (uint8_t)(1u << (i % 8));
    return nb;
}

static size_t put_words(uint8_t *p, const uint16_t *w, int count)
{
    for (int i = 0; i < count; i++) {
        p[2 * i] = (uint8_t)(w[i] >> 8);
        p[2 * i + 1] = (uint8_t)w[i];
    }
    return 2 * (size_t)count;
}

/* fc, address, then the quantity (reads, multiple writes) or the value (single writes). */
static size_t pdu_head(const mb_job_t *j, int fc, uint8_t *p)
{
    unsigned v = (unsigned)j->req.count;
    if (fc == 5)
        v = j->bits[0] ? 0xff00u : 0;
    else if (fc == 6)
        v = j->words[0];
    p[0] = (uint8_t)fc;
    p[1] = (uint8_t)(j->req.addr >> 8);
    p[2] = (uint8_t)j->req.addr;
    p[3] = (uint8_t)(v >> 8);
    p[4] = (uint8_t)v;
    return 5;
}

static void record_request(lab_modbus_bus_t *bus, const mb_job_t *j)
{
    uint8_t pdu[260];
    int fc = record_fc(j->req.op);
    if (fc < 0) {
        lab_wirerec_event(bus->rec, "note", "a request of a kind the recorder does not know");
        return;
    }
    size_t n = pdu_head(j, fc, pdu);
    if (fc == 15) {
        size_t nb = put_bits(pdu + 6, j->bits, j->req.count);
        pdu[5] = (uint8_t)nb;
        n += 1 + nb;
    } else if (fc == 16) {
        size_t nb = put_words(pdu + 6, j->words, j->req.count);
        pdu[5] = (uint8_t)nb;
        n += 1 + nb;
    }
    lab_wirerec_pdu(bus->rec, "req", j->req.unit, pdu, n);
}

/* e: 0 when libmodbus returned an answer, its errno otherwise. */
static void record_answer(lab_modbus_bus_t *bus, const mb_job_t *j, int e)
{
    uint8_t pdu[260];
    int fc = record_fc(j->req.op);
    int code = e - MODBUS_ENOBASE;
    if (fc < 0)
        return;
    if (e == 0) {
        size_t n;
        if (fc <= 4) {
            pdu[0] = (uint8_t)fc;
            n = fc <= 2 ? put_bits(pdu + 2, j->bits, j->req.count)
                        : put_words(pdu + 2, j->words, j->req.count);
            pdu[1] = (uint8_t)n;
            n += 2;
        } else {
            n = pdu_head(j, fc, pdu);
        }
        lab_wirerec_pdu(bus->rec, "rsp", j->req.unit, pdu, n);
    } else if (code >= MODBUS_EXCEPTION_ILLEGAL_FUNCTION &&
               code <= MODBUS_EXCEPTION_GATEWAY_TARGET) {
        pdu[0] = (uint8_t)(fc | 0x80);
        pdu[1] = (uint8_t)code;
        lab_wirerec_pdu(bus->rec, "rsp", j->req.unit, pdu, 2);
    } else if (e == ETIMEDOUT) {
        lab_wirerec_event(bus->rec, "timeout", NULL);
    } else if (e > MODBUS_ENOBASE) {
        char text[160];
        snprintf(text, sizeof text, "unit %d: answer refused: %s", j->req.unit, modbus_strerror(e));
        lab_wirerec_event(bus->rec, "note", text);
    } /* a broken connection is recorded as the offline event that follows */
}

static void worker_run(lab_modbus_bus_t *bus, mb_job_t *j)
{
    modbus_set_slave(bus->ctx, j->req.unit);
    modbus_set_response_timeout(bus->ctx, j->req.timeout_ms / 1000,
                                (j->req.timeout_ms % 1000) * 1000);
    int recording = lab_wirerec_on(bus->rec);
    if (recording)
        record_request(bus, j);
    errno = 0;
    int rc = ops[j->req.op].exec(bus->ctx, j);
    if (recording)
        record_answer(bus, j, rc >= 0 ? 0 : errno);
    if (rc >= 0) {
        j->res.status = LAB_OK;
        j->res.words = ops[j->req.op].writes || ops[j->req.op].on_bits ? NULL : j->words;
        j->res.bits = ops[j->req.op].writes || !ops[j->req.op].on_bits ? NULL : j->bits;
        log_debug(SUB, "id=%s %s unit=%d addr=%d count=%d ok first=%u", bus->id,
                  ops[j->req.op].name, j->req.unit, j->req.addr, j->req.count,
                  ops[j->req.op].on_bits ? j->bits[0] : j->words[0]);
        return;
    }
    int e = errno;
    int drop = job_fail(bus, j, e);
    log_debug(SUB, "id=%s %s unit=%d addr=%d count=%d err=%s reason=\"%s\"", bus->id,
              ops[j->req.op].name, j->req.unit, j->req.addr, j->req.count,
              lab_errname(j->res.status), j->msg);
    if (drop) {
        uv_mutex_lock(&bus->lock);
        int stopping = bus->stop;
        uv_mutex_unlock(&bus->lock);
        if (stopping) { /* close cut the request short: not a device problem */
            worker_disconnect(bus);
            return;
        }
        char reason[200];
        snprintf(reason, sizeof reason, "%s: %s", ops[j->req.op].name, modbus_strerror(e));
        log_warn(SUB, "id=%s offline uri=%s reason=\"%s\"", bus->id, bus->uri, reason);
        worker_disconnect(bus);
        push_event(bus, LAB_TRANSPORT_OFFLINE, LAB_ECONN, reason);
    }
}

static int tcp_peer_gone(modbus_t *ctx)
{
    int fd = modbus_get_socket(ctx);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
        return 1;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* Called with the lock held: everything queued fails at once while there is no connection. */
static void fail_queued_locked(lab_modbus_bus_t *bus, int status, const char *reason)
{
    mb_job_t *j = bus->head;
    bus->head = bus->tail = NULL;
    while (j) {
        mb_job_t *next = j->next;
        job_finish(j, status, "%s", reason);
        lab_tq_push(&bus->tq, &j->item);
        j = next;
    }
}

static void worker_main(void *arg)
{
    lab_modbus_bus_t *bus = arg;
    char reason[200] = "not connected yet";
    uint64_t next_try = 0, last_io_ms = 0;
    uv_mutex_lock(&bus->lock);
    while (!bus->stop) {
        if (!bus->connected) {
            uint64_t now = now_ms();
            if (now < next_try) {
                fail_queued_locked(bus, LAB_ECONN, reason);
                uv_cond_timedwait(&bus->cond, &bus->lock, (next_try - now) * 1000000u);
                continue;
            }
            uv_mutex_unlock(&bus->lock);
            int fd = bus->host ? tcp_connect(bus, reason, sizeof reason)
                               : rtu_connect(bus, reason, sizeof reason);
            uv_mutex_lock(&bus->lock);
            if (fd < 0) {
                unsigned delay = bus->backoff_ms;
                bus->rng ^= bus->rng << 13;
                bus->rng ^= bus->rng >> 7;
                bus->rng ^= bus->rng << 17;
                delay = delay * 4 / 5 + (unsigned)(bus->rng % (delay * 2 / 5 + 1));
                bus->backoff_ms = bus->backoff_ms * 2 > bus->set.retry_max_ms
                                      ? bus->set.retry_max_ms
                                      : bus->backoff_ms * 2;
                next_try = now_ms() + delay;
                if (bus->reported != LAB_TRANSPORT_OFFLINE)
                    log_warn(SUB, "id=%s cannot connect uri=%s reason=\"%s\" retry_ms=%u", bus->id,
                             bus->uri, reason, delay);
                push_event(bus, LAB_TRANSPORT_OFFLINE, LAB_ECONN, reason);
                fail_queued_locked(bus, LAB_ECONN, reason);
                continue;
            }
            bus->sock = fd;
            bus->connected = 1;
            bus->backoff_ms = bus->set.retry_min_ms;
            log_info(SUB, "id=%s connected uri=%s fd=%d", bus->id, bus->uri, fd);
            push_event(bus, LAB_TRANSPORT_OPEN, 0, NULL);
            continue;
        }
        mb_job_t *j = bus->head;
        if (!j) {
            uv_cond_wait(&bus->cond, &bus->lock);
            continue;
        }
        if (bus->host && now_ms() - last_io_ms > 200 && tcp_peer_gone(bus->ctx)) {
            /* The server closed while the bus was idle (restarted, idle timeout): reconnect
             * first rather than fail this request on a dead socket. Not checked between
             * back-to-back requests, where it would only cost a syscall each. */
            snprintf(reason, sizeof reason, "connection closed by %s:%s", bus->host, bus->service);
            log_warn(SUB, "id=%s offline uri=%s reason=\"%s\"", bus->id, bus->uri, reason);
            uv_mutex_unlock(&bus->lock);
            worker_disconnect(bus);
            uv_mutex_lock(&bus->lock);
            push_event(bus, LAB_TRANSPORT_OFFLINE, LAB_ECONN, reason);
            next_try = 0;
            continue;
        }
        bus->head = j->next;
        if (!bus->head)
            bus->tail = NULL;
        uv_mutex_unlock(&bus->lock);
        worker_run(bus, j);
        last_io_ms = now_ms();
        if (!bus->connected) {
            snprintf(reason, sizeof reason, "%s", j->msg);
            next_try = now_ms() + bus->backoff_ms;
        }
        uv_mutex_lock(&bus->lock);
        if (bus->stop && j->res.status == LAB_ECONN) /* cut short by close */
            job_finish(j, LAB_ESHUTDOWN, "bus closed");
        /* Pushed without the bus lock: the loop thread, woken by it, will submit the next
         * request at once and must not find the lock taken. */
        uv_mutex_unlock(&bus->lock);
        lab_tq_push(&bus->tq, &j->item);
        uv_mutex_lock(&bus->lock);
    }
    uv_mutex_unlock(&bus->lock);
    if (bus->connected)
        worker_disconnect(bus);
}

/* ---- lifecycle ---- */

static void bus_free(lab_modbus_bus_t *bus)
{
    lab_wirerec_unref(bus->rec);
    if (bus->ctx)
        modbus_free(bus->ctx);
    free(bus->id);
    free(bus->uri);
    free(bus->host);
    free(bus->service);
    free(bus->device);
    free(bus);
}

static int bus_fail(lab_modbus_bus_t *bus, char *msg, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bus_fail(lab_modbus_bus_t *bus, char *msg, size_t n, const char *fmt, ...)
{
    if (msg && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, n, fmt, ap);
        va_end(ap);
    }
    bus_free(bus);
    return LAB_EINVAL;
}

static void on_tq_closed(uv_handle_t *h)
{
    lab_modbus_bus_t *bus = (lab_modbus_bus_t *)((char *)h - offsetof(lab_modbus_bus_t, tq));
    uv_mutex_destroy(&bus->lock);
    uv_cond_destroy(&bus->cond);
    bus_free(bus);
}

static const char rtu_parity[] = {
    [LAB_PARITY_NONE] = 'N', [LAB_PARITY_EVEN] = 'E', [LAB_PARITY_ODD] = 'O'};

int lab_modbus_bus_new(uv_loop_t *loop, const lab_modbus_settings_t *s, const char *id,
                       lab_modbus_state_cb on_state, void *user, lab_modbus_bus_t **out, char *msg,
                       size_t msg_len)
{
    *out = NULL;
    lab_modbus_bus_t *bus = LAB_NEW(lab_modbus_bus_t);
    bus->loop = loop;
    bus->set = *s;
    bus->id = lab_strdup(id ? id : "?");
    bus->uri = lab_strdup(s->uri ? s->uri : "");
    bus->set.uri = bus->uri;
    bus->on_state = on_state;
    bus->user = user;
    bus->sock = -1;
    bus->reported = LAB_TRANSPORT_OPENING;
    if (!bus->set.connect_timeout_ms)
        bus->set.connect_timeout_ms = 3000;
    if (!bus->set.retry_min_ms)
        bus->set.retry_min_ms = 200;
    if (!bus->set.retry_max_ms)
        bus->set.retry_max_ms = 10000;
    if (bus->set.retry_max_ms < bus->set.retry_min_ms)
        bus->set.retry_max_ms = bus->set.retry_min_ms;
    bus->backoff_ms = bus->set.retry_min_ms;
    bus->rec = lab_wirerec_find(bus->id);
    bus->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)bus ^ 0x9e3779b97f4a7c15ull;

    if (strncmp(bus->uri, "tcp://", 6) == 0) {
        const char *p = bus->uri + 6, *colon = strrchr(p, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == p || *end || end == colon + 1 || port < 1 || port > 65535)
            return bus_fail(bus, msg, msg_len, "'%s' is not tcp://host:port", bus->uri);
        int bracket = p[0] == '[' && colon[-1] == ']';
        bus->host = lab_strndup(p + bracket, (size_t)(colon - p - 2 * bracket));
        bus->service = lab_asprintf("%ld", port);
        bus->ctx = modbus_new_tcp_pi(bus->host, bus->service);
    } else if (strncmp(bus->uri, "rtu:", 4) == 0 && bus->uri[4]) {
        if (s->data_bits < 5 || s->data_bits > 8 || (s->stop_bits != 1 && s->stop_bits != 2) ||
            (unsigned)s->parity > LAB_PARITY_ODD || s->baud <= 0)
            return bus_fail(bus, msg, msg_len, "bad RTU framing %d %d%c%d", s->baud, s->data_bits,
                            "NEO?"[(unsigned)s->parity > 2 ? 3 : s->parity], s -> stop_bits);
        bus->device = lab_strdup(bus->uri + 4);
        bus->ctx =
            modbus_new_rtu(bus->device, s->baud, rtu_parity[s->parity], s->data_bits, s->stop_bits);
    } else {
        return bus_fail(bus, msg, msg_len, "'%s' is neither tcp://host:port nor rtu:/dev/...",
                        bus->uri);
    }
    if (!bus->ctx)
        return bus_fail(bus, msg, msg_len, "libmodbus refused '%s': %s", bus->uri,
                        modbus_strerror(errno));
    if (bus->rec) {
        char set[64] = "";
        if (bus->device)
            snprintf(set, sizeof set, "%d %d%c%d", s->baud, s->data_bits, rtu_parity[s->parity],
                     s->stop_bits);
        lab_wirerec_set_link(bus->rec, bus->host ? "modbus-tcp" : "modbus-rtu",
                             bus->host ? bus->uri : set);
    }
    if (lab_tq_init(&bus->tq, loop) != LAB_OK)
        return bus_fail(bus, msg, msg_len, "cannot create the result queue");
    uv_mutex_init(&bus->lock);
    uv_cond_init(&bus->cond);
    if (uv_thread_create(&bus->thread, worker_main, bus) != 0) {
        bus->closing = 1;
        lab_tq_close(&bus->tq, on_tq_closed); /* frees the bus once the handle is closed */
        if (msg && msg_len)
            snprintf(msg, msg_len, "cannot start the worker thread");
        return LAB_EIO;
    }
    log_info(SUB, "id=%s bus started uri=%s", bus->id, bus->uri);
    *out = bus;
    return LAB_OK;
}

void lab_modbus_bus_close(lab_modbus_bus_t *bus)
{
    if (!bus || bus->closing)
        return;
    bus->closing = 1;
    uv_mutex_lock(&bus->lock);
    bus->stop = 1;
    if (bus->sock >= 0)
        shutdown(bus->sock, SHUT_RDWR); /* wakes a worker blocked in select()/recv() */
    uv_cond_signal(&bus->cond);
    uv_mutex_unlock(&bus->lock);
    uv_thread_join(&bus->thread);
    log_info(SUB, "id=%s bus stopped uri=%s", bus->id, bus->uri);

    mb_job_t *j = bus->head;
    bus->head = bus->tail = NULL;
    lab_tq_close(&bus->tq, on_tq_closed); /* finished results first, in order */
    while (j) {
        mb_job_t *next = j->next;
        job_finish(j, LAB_ESHUTDOWN, "bus closed");
        job_deliver(&j->item);
        j = next;
    }
}
