/* Wire recorders: the registry by instrument id, event formatting into the bounded buffer, and
 * the writer thread that owns the file (header, rotation, errors). */
#include "drivers/transport/wirerec.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define SUB "wirerec"

/* The writer waits this long for more events before writing a batch that is under half the
 * buffer: fewer, larger writes, at the price of a file that lags the wire by this much. */
#define BATCH_WAIT_NS (100 * 1000 * 1000)

struct lab_wirerec {
    atomic_int refs;
    atomic_int on;
    struct lab_wirerec *next; /* in the registry */
    char *id, *driver;
    uint64_t max_bytes;
    unsigned keep;
    size_t cap;
    int have_clock;
    int64_t lab0_ms;
    uint64_t hr0_ns;
    double scale;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* the writer waits on it */
    pthread_cond_t done; /* flush waits on it */
    /* Under lock: */
    char *buf, *spare;
    size_t len;
    uint64_t appended, written; /* bytes, for flush */
    uint64_t dropped_pending, dropped_total, events;
    char *transport, *settings;
    char *path;      /* as last started */
    char *next_path; /* the file to switch to (NULL: none, i.e. stop) */
    int switch_pending;
    size_t switch_at; /* bytes of buf that still belong to the old file */
    int stop, flush_req, thread_live;
    char error[300];
    int64_t wall_sec; /* cached "YYYY-MM-DDTHH:MM:SS." of this second */
    char wall_prefix[24];
    pthread_t thread;

    /* Writer thread only: */
    int fd;
    char *fpath;
    uint64_t fsize;
    int header_due;
};

/* ---- registry ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static lab_wirerec_t *reg_head;

lab_wirerec_t *lab_wirerec_find(const char *id)
{
    lab_wirerec_t *found = NULL;
    pthread_mutex_lock(&reg_lock);
    for (lab_wirerec_t *r = reg_head; id && r; r = r->next)
        if (strcmp(r->id, id) == 0) {
            found = r;
            atomic_fetch_add(&r->refs, 1);
            break;
        }
    pthread_mutex_unlock(&reg_lock);
    return found;
}

static void reg_remove(lab_wirerec_t *r)
{
    pthread_mutex_lock(&reg_lock);
    for (lab_wirerec_t **p = &reg_head; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
}

void lab_wirerec_unref(lab_wirerec_t *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    pthread_cond_destroy(&r->done);
    free(r->buf);
    free(r->spare);
    free(r->id);
    free(r->driver);
    free(r->transport);
    free(r->settings);
    free(r->path);
    free(r->next_path);
    free(r->fpath);
    free(r);
}

lab_wirerec_t *lab_wirerec_new(const lab_wirerec_opts_t *o)
{
    lab_wirerec_t *r = LAB_NEW(lab_wirerec_t);
    atomic_init(&r->refs, 1);
    atomic_init(&r->on, 0);
    r->id = lab_strdup(o->id ? o->id : "?");
    r->driver = lab_strdup(o->driver ? o->driver : "");
    r->max_bytes = o->max_bytes ? o->max_bytes : LAB_WIREREC_MAX_BYTES_DEFAULT;
    r->keep = o->keep;
    r->cap = o->buffer_bytes ? o->buffer_bytes : LAB_WIREREC_BUFFER_DEFAULT;
    if (r->cap < 4096)
        r->cap = 4096;
    if (o->clock) {
        r->have_clock = 1;
        r->lab0_ms = lab_clock_now_ms(o->clock);
        r->hr0_ns = uv_hrtime();
        r->scale = o->clock->scale > 0 ? o->clock->scale : 1.0;
    }
    r->buf = lab_malloc(r->cap);
    r->spare = lab_malloc(r->cap);
    r->fd = -1;
    r->wall_sec = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&r->done, NULL);
    pthread_mutex_lock(&reg_lock);
    r->next = reg_head;
    reg_head = r;
    pthread_mutex_unlock(&reg_lock);
    return r;
}

void lab_wirerec_set_link(lab_wirerec_t *r, const char *transport, const char *settings)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    free(r->transport);
    free(r->settings);
    r->transport = lab_strdup(transport ? transport : "");
    r->settings = lab_strdup(settings ? settings : "");
    pthread_mutex_unlock(&r->lock);
}

bool lab_wirerec_on(const lab_wirerec_t *r)
{
    return r && atomic_load_explicit(&r->on, memory_order_relaxed);
}

/* ---- formatting ---- */

/* text as the inside of a JSON string: valid UTF-8, quotes, backslashes and controls escaped. */
static size_t json_escape(char *out, size_t cap, const char *text)
{
    char clean[400];
    lab_utf8_sanitize(clean, sizeof clean, text, strlen(text));
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)clean; *p && n + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n] = '\0';
    return n;
}

/* {"t":LAB,"wall":"ISO", at p (room for at least 64 bytes); under lock. */
static size_t stamp(lab_wirerec_t *r, char *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t lab_ms = wall_ms;
    if (r->have_clock)
        lab_ms = r->lab0_ms + (int64_t)((double)(uv_hrtime() - r->hr0_ns) / 1e6 * r->scale);
    if (ts.tv_sec != r->wall_sec) {
        char iso[32];
        lab_time_iso((int64_t)ts.tv_sec * 1000, iso);
        memcpy(r->wall_prefix, iso, 20); /* "2026-12-05T00:13:01." */
        r->wall_prefix[20] = '\0';
        r->wall_sec = ts.tv_sec;
    }
    return (size_t)sprintf(p, "{\"t\":%lld.%03d,\"wall\":\"%s%03dZ\",", (long long)(lab_ms / 1000),
                           (int)(lab_ms % 1000), r->wall_prefix, (int)(wall_ms % 1000));
}

static void wake_writer(lab_wirerec_t *r, size_t was)
{
    if (was == 0 || (was < r->cap / 2 && r->len >= r->cap / 2))
        pthread_cond_signal(&r->wake);
}

/* One event line. key/ev/text: "d":"ev" lines; data with hex. unit < 0: none. */
static void emit(lab_wirerec_t *r, const char *d, int unit, const char *ev, const char *text,
                 const uint8_t *data, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    if (!lab_wirerec_on(r))
        return;
    char esc[900];
    size_t elen = text ? json_escape(esc, sizeof esc, text) : 0;
    size_t need = 160 + elen + 2 * n;
    pthread_mutex_lock(&r->lock);
    if (!atomic_load_explicit(&r->on, memory_order_relaxed)) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    if (r->len + need > r->cap) {
        r->dropped_pending++;
        r->dropped_total++;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->lock);
        return;
    }
    size_t was = r->len;
    char *p = r->buf + r->len;
    p += stamp(r, p);
    p += sprintf(p, "\"d\":\"%s\"", d);
    if (unit >= 0)
        p += sprintf(p, ",\"unit\":%d", unit);
    if (ev)
        p += sprintf(p, ",\"ev\":\"%s\"", ev);
    if (text) {
        memcpy(p, ",\"text\":\"", 9);
        p += 9;
        memcpy(p, esc, elen);
        p += elen;
        *p++ = '"';
    }
    if (data) {
        memcpy(p, ",\"hex\":\"", 8);
        p += 8;
        for (size_t i = 0; i < n; i++) {
            *p++ = hexd[data[i] >> 4];
            *p++ = hexd[data[i] & 15];
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p++ = '\n';
    r->len = (size_t)(p - r->buf);
    r->appended += r->len - was;
    wake_writer(r, was);
    pthread_mutex_unlock(&r->lock);
}

void lab_wirerec_bytes(lab_wirerec_t *r, const char *dir, const uint8_t *data, size_t len)
{
    emit(r, dir, -1, NULL, NULL, data, len);
}

void lab_wirerec_pdu(lab_wirerec_t *r, const char *dir, int unit, const uint8_t *pdu, size_t len)
{
    emit(r, dir, unit, NULL, NULL, pdu, len);
}

void lab_wirerec_event(lab_wirerec_t *r, const char *ev, const char *text)
{
    emit(r, "ev", -1, ev, text, NULL, 0);
}

/* ---- the writer thread ---- */

static void set_error(lab_wirerec_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(lab_wirerec_t *r, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&r->lock);
    int fresh = strcmp(r->error, msg) != 0;
    snprintf(r->error, sizeof r->error, "%s", msg);
    pthread_mutex_unlock(&r->lock);
    if (fresh) /* once per distinct error, not once per batch */
        log_error(SUB, "id=%s %s", r->id, msg);
}

static size_t count_lines(const char *p, size_t n)
{
    size_t k = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        k++;
    return k;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* PATH.keep-1 -> PATH.keep, ..., PATH -> PATH.1 (keep 0: PATH is removed). */
static void rotate_names(lab_wirerec_t *r, const char *path)
{
    size_t pl = strlen(path) + 16;
    char *from = lab_malloc(pl), *to = lab_malloc(pl);
    for (unsigned i = r->keep; i >= 1; i--) {
        if (i == 1)
            snprintf(from, pl, "%s", path);
        else
            snprintf(from, pl, "%s.%u", path, i - 1);
        snprintf(to, pl, "%s.%u", path, i);
        if (rename(from, to) != 0 && errno != ENOENT)
            set_error(r, "cannot rotate %s to %s: %s", from, to, strerror(errno));
    }
    if (r->keep == 0 && unlink(path) != 0 && errno != ENOENT)
        set_error(r, "cannot remove %s: %s", path, strerror(errno));
    free(from);
    free(to);
}

static void open_file(lab_wirerec_t *r, const char *path, int rotate_first)
{
    struct stat st;
    if (rotate_first && stat(path, &st) == 0 && st.st_size > 0)
        rotate_names(r, path);
    r->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    r->fsize = 0;
    r->header_due = 1;
    if (r->fd < 0)
        set_error(r, "cannot record to %s: %s", path, strerror(errno));
}

static void close_file(lab_wirerec_t *r)
{
    if (r->fd >= 0 && close(r->fd) != 0)
        set_error(r, "closing %s: %s", r->fpath, strerror(errno));
    r->fd = -1;
}

static void write_header(lab_wirerec_t *r)
{
    char started[32], id[300], drv[200], tr[100], set[300], line[1200];
    lab_time_iso(lab_wall_ms(), started);
    pthread_mutex_lock(&r->lock);
    json_escape(id, sizeof id, r->id);
    json_escape(drv, sizeof drv, r->driver);
    json_escape(tr, sizeof tr, r->transport ? r->transport : "");
    json_escape(set, sizeof set, r->settings ? r->settings : "");
    pthread_mutex_unlock(&r->lock);
    int n = snprintf(line, sizeof line,
                     "{\"labloop_wire\":1,\"id\":\"%s\",\"driver\":\"%s\",\"transport\":\"%s\","
                     "\"settings\":\"%s\",\"started\":\"%s\"}\n",
                     id, drv, tr, set, started);
    int e = write_all(r->fd, line, (size_t)n);
    if (e)
        set_error(r, "writing %s: %s", r->fpath, strerror(e));
    r->fsize += (size_t)n;
    r->header_due = 0;
}

static void count_lost(lab_wirerec_t *r, const char *p, size_t n)
{
    size_t lost = count_lines(p, n);
    pthread_mutex_lock(&r->lock);
    r->dropped_total += lost;
    pthread_mutex_unlock(&r->lock);
}

/* Whole lines into the current file, rotating once it passes max_bytes. */
static void write_out(lab_wirerec_t *r, const char *p, size_t n)
{
    while (n) {
        if (r->fd < 0) {
            count_lost(r, p, n);
            return;
        }
        if (r->header_due)
            write_header(r);
        size_t take = n;
        if (r->fsize + n > r->max_bytes) {
            size_t room = r->max_bytes > r->fsize ? (size_t)(r->max_bytes - r->fsize) : 1;
            const char *nl = memchr(p + room - 1, '\n', n - (room - 1));
            take = nl ? (size_t)(nl - p) + 1 : n;
        }
        int e = write_all(r->fd, p, take);
        if (e) {
            set_error(r, "writing %s: %s", r->fpath, strerror(e));
            count_lost(r, p, take);
        } else {
            size_t k = count_lines(p, take);
            pthread_mutex_lock(&r->lock);
            r->events += k;
            pthread_mutex_unlock(&r->lock);
        }
        r->fsize += take;
        p += take;
        n -= take;
        if (r->fsize >= r->max_bytes) { /* the new file starts with its header at once */
            close_file(r);
            open_file(r, r->fpath, 1);
            if (r->fd >= 0)
                write_header(r);
        }
    }
}

static void *writer_main(void *arg)
{
    lab_wirerec_t *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->len && !r->switch_pending && !r->stop && !r->dropped_pending)
            pthread_cond_wait(&r->wake, &r->lock);
        if (!r->stop && !r->flush_req && !r->switch_pending && r->len < r->cap / 2) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += BATCH_WAIT_NS;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&r->wake, &r->lock, &until);
        }
        char *data = r->buf;
        size_t n = r->len, cut = r->switch_pending ? r->switch_at : n;
        r->buf = r->spare;
        r->spare = data;
        r->len = 0;
        int sw = r->switch_pending;
        char *np = r->next_path;
        r->switch_pending = 0;
        r->next_path = NULL;
        if (r->dropped_pending) { /* the note goes after what was taken, before what comes */
            char text[96];
            snprintf(text, sizeof text, "%llu events dropped: the recording buffer was full",
                     (unsigned long long)r->dropped_pending);
            char *p = r->buf;
            p += stamp(r, p);
            p += sprintf(p, "\"d\":\"ev\",\"ev\":\"note\",\"text\":\"%s\"}\n", text);
            r->len = (size_t)(p - r->buf);
            r->appended += r->len;
            r->dropped_pending = 0;
        }
        int stopping = r->stop;
        pthread_mutex_unlock(&r->lock);

        write_out(r, data, cut);
        if (sw) {
            close_file(r);
            free(r->fpath);
            r->fpath = np;
            if (np)
                open_file(r, np, 1);
        }
        write_out(r, data + cut, n - cut);

        pthread_mutex_lock(&r->lock);
        r->written += n;
        pthread_cond_broadcast(&r->done);
        if (stopping && !r->len && !r->switch_pending && !r->dropped_pending)
            break;
    }
    pthread_mutex_unlock(&r->lock);
    close_file(r);
    return NULL;
}

/* ---- control ---- */

int lab_wirerec_start(lab_wirerec_t *r, const char *path, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "no recording path given");
        return LAB_EINVAL;
    }
    /* Checked here, on the caller's thread, so that the operator reads why at once. */
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) { /* a missing last directory (STATE_DIR/wire) is made */
        char *dir = lab_strdup(path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            if (mkdir(dir, 0755) == 0 || errno == EEXIST)
                fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            else
                errno = ENOENT;
        }
        free(dir);
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot record to %s: %s", path, strerror(errno));
        pthread_mutex_lock(&r->lock);
        snprintf(r->error, sizeof r->error, "%s", err);
        pthread_mutex_unlock(&r->lock);
        return LAB_EIO;
    }
    close(fd);
    pthread_mutex_lock(&r->lock);
    if (!r->thread_live) {
        if (pthread_create(&r->thread, NULL, writer_main, r) != 0) {
            pthread_mutex_unlock(&r->lock);
            snprintf(err, errlen, "cannot start the recording writer thread");
            return LAB_EIO;
        }
        r->thread_live = 1;
    }
    free(r->next_path);
    r->next_path = lab_strdup(path);
    if (!r->switch_pending) {
        r->switch_pending = 1;
        r->switch_at = r->len;
    }
    free(r->path);
    r->path = lab_strdup(path);
    r->error[0] = '\0';
    atomic_store(&r->on, 1);
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    log_info(SUB, "id=%s recording to %s", r->id, path);
    return LAB_OK;
}

void lab_wirerec_stop(lab_wirerec_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    if (atomic_load(&r->on)) {
        atomic_store(&r->on, 0);
        free(r->next_path);
        r->next_path = NULL;
        if (!r->switch_pending) {
            r->switch_pending = 1;
            r->switch_at = r->len;
        }
        pthread_cond_signal(&r->wake);
        log_info(SUB, "id=%s recording stopped", r->id);
    }
    pthread_mutex_unlock(&r->lock);
}

void lab_wirerec_flush(lab_wirerec_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    uint64_t target = r->appended;
    r->flush_req++;
    pthread_cond_signal(&r->wake);
    while (r->thread_live && (r->written < target || r->switch_pending || r->dropped_pending))
        pthread_cond_wait(&r->done, &r->lock);
    r->flush_req--;
    pthread_mutex_unlock(&r->lock);
}

void lab_wirerec_close(lab_wirerec_t *r)
{
    if (!r)
        return;
    reg_remove(r);
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->on, 0);
    r->stop = 1;
    int live = r->thread_live;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    if (live)
        pthread_join(r->thread, NULL);
    lab_wirerec_unref(r);
}

void lab_wirerec_status(lab_wirerec_t *r, lab_wirerec_status_t *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    out->on = atomic_load(&r->on);
    snprintf(out->path, sizeof out->path, "%s", r->path ? r->path : "");
    out->events = r->events;
    out->dropped = r->dropped_total;
    out->pending = r->appended - r->written + (uint64_t)(r->switch_pending != 0);
    snprintf(out->error, sizeof out->error, "%s", r->error);
    pthread_mutex_unlock(&r->lock);
}
