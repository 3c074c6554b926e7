/* The raw termios backend: a device path opened O_NONBLOCK|O_NOCTTY, put in raw mode with the
 * configured framing. Used for ptys (the simulator's, socat's) and for any port libserialport
 * refuses. */
#include "drivers/transport/transport_int.h"

#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

static const struct {
    int baud;
    speed_t speed;
} speeds[] = {
    {50, B50},           {75, B75},           {110, B110},         {134, B134},
    {150, B150},         {200, B200},         {300, B300},         {600, B600},
    {1200, B1200},       {1800, B1800},       {2400, B2400},       {4800, B4800},
    {9600, B9600},       {19200, B19200},     {38400, B38400},     {57600, B57600},
    {115200, B115200},   {230400, B230400},   {460800, B460800},   {500000, B500000},
    {576000, B576000},   {921600, B921600},   {1000000, B1000000}, {1152000, B1152000},
    {1500000, B1500000}, {2000000, B2000000}, {2500000, B2500000}, {3000000, B3000000},
    {3500000, B3500000}, {4000000, B4000000},
};

int lab_tty_speed(int baud, unsigned *speed)
{
    for (size_t i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].baud == baud) {
            *speed = speeds[i].speed;
            return LAB_OK;
        }
    return LAB_EINVAL;
}

static const tcflag_t char_sizes[] = {[5] = CS5, [6] = CS6, [7] = CS7, [8] = CS8};

void lab_tty_make_termios(const lab_transport_settings_t *set, struct termios *tio)
{
    unsigned speed = B9600;
    cfmakeraw(tio);
    lab_tty_speed(set->baud, &speed);
    cfsetispeed(tio, speed);
    cfsetospeed(tio, speed);
    tio->c_cflag &= ~(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
    tio->c_cflag |= char_sizes[set->data_bits] | CREAD | CLOCAL;
    if (set->parity != LAB_PARITY_NONE)
        tio->c_cflag |= PARENB | (set->parity == LAB_PARITY_ODD ? PARODD : 0);
    if (set->stop_bits == 2)
        tio->c_cflag |= CSTOPB;
    if (set->flow == LAB_FLOW_RTSCTS)
        tio->c_cflag |= CRTSCTS;
    tio->c_iflag &= ~(IXON | IXOFF | IXANY);
    if (set->flow == LAB_FLOW_XONXOFF)
        tio->c_iflag |= IXON | IXOFF;
    tio->c_cc[VMIN] = 1;
    tio->c_cc[VTIME] = 0;
}

static int tty_configure(lab_transport_t *t, int fd)
{
    struct termios tio;
    if (tcgetattr(fd, &tio) < 0)
        return -1;
    lab_tty_make_termios(&t->set, &tio);
    if (tcsetattr(fd, TCSANOW, &tio) < 0) {
        /* Some kernels (6.x) take parity (or a character size below 8, a 7E1 reader's) on a
         * pseudo-terminal once and refuse it with EINVAL on every later open. A pty carries
         * neither parity bits nor short characters: drop them there only. */
        struct stat st;
        if (errno != EINVAL || fstat(fd, &st) < 0 || major(st.st_rdev) < 136 ||
            major(st.st_rdev) > 143 ||
            (!(tio.c_cflag & (PARENB | PARODD)) && (tio.c_cflag & CSIZE) == CS8))
            return -1;
        tio.c_cflag &= ~(tcflag_t)(PARENB | PARODD | CSIZE);
        tio.c_cflag |= CS8;
        if (tcsetattr(fd, TCSANOW, &tio) < 0)
            return -1;
        log_debug("transport", "id=%s parity dropped on the pseudo-terminal %s", t->id, t->path);
    }
    tcflush(fd, TCIOFLUSH); /* bytes from before we owned the line belong to nobody */
    return 0;
}

static ssize_t tty_read(lab_transport_t *t, void *buf, size_t n)
{
    return read(t->fd, buf, n);
}
static ssize_t tty_write(lab_transport_t *t, const void *buf, size_t n)
{
    return write(t->fd, buf, n);
}

static void tty_open(lab_transport_t *t)
{
    int fd = open(t->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        lab_transport_lost(t, LAB_ECONN, "open %s: %s", t->path, strerror(errno));
        return;
    }
    if (!isatty(fd)) {
        close(fd);
        lab_transport_lost(t, LAB_EDEVICE, "%s is not a terminal device", t->path);
        return;
    }
    if (tty_configure(t, fd) < 0) {
        int e = errno;
        close(fd);
        lab_transport_lost(t, LAB_EDEVICE, "termios on %s: %s", t->path, strerror(e));
        return;
    }
    t->fd_read = tty_read;
    t->fd_write = tty_write;
    int rc = lab_transport_fd_attach(t, fd);
    if (rc < 0) {
        close(fd);
        lab_transport_lost(t, LAB_EIO, "poll %s: %s", t->path, uv_strerror(rc));
        return;
    }
    lab_transport_opened(t);
}

static int tty_write_op(lab_transport_t *t)
{
    lab_transport_fd_flush(t);
    return LAB_OK;
}

/* TIOCSBRK/TIOCCBRK with a loop timer in between: tcsendbreak would block the loop thread for
 * the whole break. */
static int tty_break(lab_transport_t *t, int on)
{
    if (ioctl(t->fd, on ? TIOCSBRK : TIOCCBRK) < 0) {
        log_warn("transport", "id=%s break on=%d: %s", t->id, on, strerror(errno));
        return LAB_EDEVICE;
    }
    return LAB_OK;
}

static void tty_close(lab_transport_t *t)
{
    int fd = t->fd;
    lab_transport_fd_detach(t);
    if (fd >= 0)
        close(fd); /* uv_close already removed it from the poller */
}

const lab_transport_ops_t lab_transport_tty_ops = {
    .name = "tty",
    .open = tty_open,
    .write = tty_write_op,
    .send_break = tty_break,
    .close = tty_close,
};
