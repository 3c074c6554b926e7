/* The libserialport backend for real serial ports (USB adapters, on-board UARTs): the port is
 * opened and framed through libserialport, then its fd is polled like the tty backend's.
 * libserialport 0.1.1 refuses ptys (it looks the port up in sysfs and needs TIOCMGET), so when
 * it refuses a path that is nevertheless a terminal, the transport switches to the tty backend
 * for good. */
#include "drivers/transport/transport_int.h"

#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libserialport.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const enum sp_parity sp_parities[] = {
    [LAB_PARITY_NONE] = SP_PARITY_NONE,
    [LAB_PARITY_EVEN] = SP_PARITY_EVEN,
    [LAB_PARITY_ODD] = SP_PARITY_ODD,
};
static const enum sp_flowcontrol sp_flows[] = {
    [LAB_FLOW_NONE] = SP_FLOWCONTROL_NONE,
    [LAB_FLOW_RTSCTS] = SP_FLOWCONTROL_RTSCTS,
    [LAB_FLOW_XONXOFF] = SP_FLOWCONTROL_XONXOFF,
};

static void sp_reason(const char *what, char *buf, size_t n)
{
    char *m = sp_last_error_message();
    snprintf(buf, n, "%s: %s", what, m ? m : "unknown error");
    sp_free_error_message(m);
}

/* libserialport's nonblocking read folds EOF into EAGAIN (both return 0), so the fd is read
 * directly: EOF and EIO are how an unplugged adapter shows. */
static ssize_t serial_read(lab_transport_t *t, void *buf, size_t n)
{
    return read(t->fd, buf, n);
}
static ssize_t serial_write(lab_transport_t *t, const void *buf, size_t n)
{
    return write(t->fd, buf, n);
}

static int is_terminal(const char *path)
{
    int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int yes = isatty(fd);
    close(fd);
    return yes;
}

static void serial_release(lab_transport_t *t)
{
    if (t->sp) {
        sp_close(t->sp);
        sp_free_port(t->sp);
        t->sp = NULL;
    }
}

static void serial_open(lab_transport_t *t)
{
    char reason[256];
    struct sp_port *port = NULL;
    if (sp_get_port_by_name(t->path, &port) != SP_OK) {
        sp_reason("lookup", reason, sizeof reason);
        goto refused;
    }
    if (sp_open(port, SP_MODE_READ_WRITE) != SP_OK) {
        sp_reason("open", reason, sizeof reason);
        sp_free_port(port);
        goto refused;
    }
    t->sp = port;
    if (sp_set_baudrate(port, t->set.baud) != SP_OK ||
        sp_set_bits(port, t->set.data_bits) != SP_OK ||
        sp_set_parity(port, sp_parities[t->set.parity]) != SP_OK ||
        sp_set_stopbits(port, t->set.stop_bits) != SP_OK ||
        sp_set_flowcontrol(port, sp_flows[t->set.flow]) != SP_OK) {
        sp_reason("settings", reason, sizeof reason);
        serial_release(t);
        lab_transport_lost(t, LAB_EDEVICE, "%s on %s", reason, t->path);
        return;
    }
    int fd = -1;
    sp_get_port_handle(port, &fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        serial_release(t);
        lab_transport_lost(t, LAB_EIO, "fcntl %s: %s", t->path, strerror(errno));
        return;
    }
    sp_flush(port, SP_BUF_BOTH);
    t->fd_read = serial_read;
    t->fd_write = serial_write;
    int rc = lab_transport_fd_attach(t, fd);
    if (rc < 0) {
        serial_release(t);
        lab_transport_lost(t, LAB_EIO, "poll %s: %s", t->path, uv_strerror(rc));
        return;
    }
    lab_transport_opened(t);
    return;

refused:
    if (is_terminal(t->path)) {
        log_info("transport", "id=%s libserialport refused %s (%s): using raw termios", t->id,
                 t->path, reason);
        t->ops = &lab_transport_tty_ops;
        t->ops->open(t);
        return;
    }
    lab_transport_lost(t, LAB_ECONN, "%s on %s", reason, t->path);
}

static int serial_write_op(lab_transport_t *t)
{
    lab_transport_fd_flush(t);
    return LAB_OK;
}

static int serial_break(lab_transport_t *t, int on)
{
    if ((on ? sp_start_break(t->sp) : sp_end_break(t->sp)) != SP_OK) {
        char reason[256];
        sp_reason(on ? "start break" : "end break", reason, sizeof reason);
        log_warn("transport", "id=%s %s", t->id, reason);
        return LAB_EDEVICE;
    }
    return LAB_OK;
}

static void serial_close(lab_transport_t *t)
{
    lab_transport_fd_detach(t); /* uv_close takes the fd out of the poller before sp_close */
    serial_release(t);
}

const lab_transport_ops_t lab_transport_serial_ops = {
    .name = "serial",
    .open = serial_open,
    .write = serial_write_op,
    .send_break = serial_break,
    .close = serial_close,
};
