/* Wire recorders: the registry by instrument id, event formatting into the bounded buffer, and
 * the one writer thread of the process that owns every recorder's file (header, rotation,
 * errors). A recorder with something to write puts itself on the writer's ready list; the writer
 * takes the whole list, and serves each recorder in turn under that recorder's own lock only
 * for the swap of its buffer. Lock order: a recorder's lock, then the writer's (never the other
 * way), so that an append never waits for a write. */
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

/* The writer waits this long for more events before writing a batch that no one waits for and
 * that is under half of its buffer: fewer, larger writes, at the price of a file that lags the
 * wire by this much. */
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
    pthread_cond_t done; /* flush and close wait on it */
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
    int stop, flush_req;
    int retired; /* closed: the writer is done with it for good */
    char error[300];
    int64_t wall_sec; /* cached "YYYY-MM-DDTHH:MM:SS." of this second */
    char wall_prefix[24];

    /* Under the writer's lock: */
    struct lab_wirerec *ready_next;
    int in_ready;

    /* Writer thread only: */
    int fd;      /* -1 until the first event of a session opens fpath */
    char *fpath; /* the file of this session (NULL: off) */
    uint64_t fsize;
    int header_due;
};

/* ---- the writer, one for the process ---- */

static struct {
    pthread_once_t once;
    pthread_mutex_t life; /* serialises starting and stopping the thread */
    int users;            /* recorders alive (under life) */
    atomic_int live;      /* the thread runs */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC */
    /* Under lock: */
    lab_wirerec_t *head, *tail; /* recorders with work, oldest first */
    int urgent;                 /* someone waits, or a buffer is half full: no batching wait */
    int stop;
} W = {.once = PTHREAD_ONCE_INIT,
       .life = PTHREAD_MUTEX_INITIALIZER,
       .lock = PTHREAD_MUTEX_INITIALIZER};

static void writer_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&W.wake, &ca);
    pthread_condattr_destroy(&ca);
}

/* r has something for the writer. Called with r->lock held. */
static void writer_kick(lab_wirerec_t *r, int urgent)
{
    pthread_mutex_lock(&W.lock);
    /* With a list already there the writer is batching or writing: no need to wake it. */
    int wake = !W.head || (urgent && !W.urgent);
    if (!r->in_ready && !r->retired) {
        r->in_ready = 1;
        r->ready_next = NULL;
        if (W.tail)
            W.tail->ready_next = r;
        else
            W.head = r;
        W.tail = r;
    }
    W.urgent |= urgent;
    if (wake)
        pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.lock);
}

/* Off the ready list for good. Called with r->lock held. */
static void writer_forget(lab_wirerec_t *r)
{
    pthread_mutex_lock(&W.lock);
    if (r->in_ready) {
        lab_wirerec_t *prev = NULL;
        for (lab_wirerec_t *q = W.head; q; prev = q, q = q->ready_next)
            if (q == r) {
                if (prev)
                    prev->ready_next = r->ready_next;
                else
                    W.head = r->ready_next;
                if (W.tail == r)
                    W.tail = prev;
                break;
            }
        r->in_ready = 0;
    }
    pthread_mutex_unlock(&W.lock);
}

static void *writer_main(void *arg);

/* Starts the thread if it does not run. Under W.life. */
static int writer_spawn(void)
{
    if (atomic_load(&W.live))
        return 0;
    if (pthread_create(&W.thread, NULL, writer_main, NULL) != 0) {
        log_error(SUB, "cannot start the recording writer thread");
        return LAB_ENOMEM; /* the system refused a thread: EAGAIN, its resources */
    }
    atomic_store(&W.live, 1);
    return 0;
}

static void writer_acquire(void)
{
    pthread_once(&W.once, writer_init);
    pthread_mutex_lock(&W.life);
    W.users++;
    writer_spawn();
    pthread_mutex_unlock(&W.life);
}

/* The last recorder gone: the thread ends (every recorder is retired, so none is ready). */
static void writer_release(void)
{
    pthread_mutex_lock(&W.life);
    if (--W.users == 0 && atomic_load(&W.live)) {
        pthread_mutex_lock(&W.lock);
        W.stop = 1;
        pthread_cond_signal(&W.wake);
        pthread_mutex_unlock(&W.lock);
        pthread_join(W.thread, NULL);
        atomic_store(&W.live, 0);
        W.stop = 0;
    }
    pthread_mutex_unlock(&W.life);
}

int lab_wirerec_writer_threads(void)
{
    return atomic_load(&W.live);
}

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
    pthread_cond_init(&r->done, NULL);
    writer_acquire();
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

/* The first bytes of a batch put r on the ready list; half a buffer makes it urgent. */
static void wake_writer(lab_wirerec_t *r, size_t was)
{
    int half = was < r->cap / 2 && r->len >= r->cap / 2;
    if (was == 0 || half)
        writer_kick(r, half);
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
        writer_kick(r, 1);
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

/* A new file: one that is there and not empty is rotated away first, never appended to. */
static void open_file(lab_wirerec_t *r, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > 0)
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
    if (n && r->fd < 0 && r->fpath) /* the session's first event; or a retry after an error */
        open_file(r, r->fpath);
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
            open_file(r, r->fpath);
            if (r->fd >= 0)
                write_header(r);
        }
    }
}

/* One turn for r: its buffer swapped out under its lock, then written without it. */
static void serve(lab_wirerec_t *r)
{
    pthread_mutex_lock(&r->lock);
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
    pthread_mutex_unlock(&r->lock);

    write_out(r, data, cut);
    if (sw) { /* the next session's file is made by its first event (write_out) */
        close_file(r);
        free(r->fpath);
        r->fpath = np;
    }
    write_out(r, data + cut, n - cut);

    pthread_mutex_lock(&r->lock);
    r->written += n;
    int more = r->len || r->switch_pending || r->dropped_pending;
    if (r->stop && !more) {
        pthread_mutex_unlock(&r->lock);
        close_file(r);
        pthread_mutex_lock(&r->lock);
        r->retired = 1;
        writer_forget(r);
    } else if (more) {
        writer_kick(r, r->stop || r->flush_req || r->switch_pending || r->dropped_pending);
    }
    pthread_cond_broadcast(&r->done);
    pthread_mutex_unlock(&r->lock);
}

static void *writer_main(void *arg)
{
    (void)arg;
    lab_wirerec_t **batch = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&W.lock);
    for (;;) {
        while (!W.head && !W.stop)
            pthread_cond_wait(&W.wake, &W.lock);
        if (!W.head)
            break; /* stopped, and every recorder is retired */
        if (!W.urgent && !W.stop) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += BATCH_WAIT_NS;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            while (!W.urgent && !W.stop &&
                   pthread_cond_timedwait(&W.wake, &W.lock, &until) != ETIMEDOUT)
                ;
        }
        size_t n = 0;
        for (lab_wirerec_t *r = W.head; r; r = r->ready_next) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                batch = lab_realloc(batch, cap * sizeof *batch);
            }
            batch[n++] = r;
            r->in_ready = 0;
        }
        W.head = W.tail = NULL;
        W.urgent = 0;
        pthread_mutex_unlock(&W.lock);
        /* A recorder is freed only after its close saw it retired, which only serve does. */
        for (size_t i = 0; i < n; i++)
            serve(batch[i]);
        pthread_mutex_lock(&W.lock);
    }
    pthread_mutex_unlock(&W.lock);
    free(batch);
    return NULL;
}

/* ---- control ---- */

int lab_wirerec_check_path(const char *path, bool make_dir, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "no recording path given");
        return LAB_EINVAL;
    }
    struct stat st;
    int e = 0;
    char *dir = NULL;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            e = EISDIR;
        else if (access(path, W_OK) != 0)
            e = errno;
        goto done;
    }
    if (errno != ENOENT) {
        e = errno;
        goto done;
    }
    dir = lab_strdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, strlen(dir) + 1, ".");
    else
        slash[slash == dir] = '\0'; /* "/x.wire": the root */
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            e = ENOTDIR;
        else if (access(dir, W_OK | X_OK) != 0)
            e = errno;
        goto done;
    }
    if (errno != ENOENT) {
        e = errno;
        goto done;
    }
    /* A missing last directory (STATE_DIR/wire) is made: its parent must exist and allow it. */
    if (make_dir) {
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            e = errno;
        goto done;
    }
    slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, strlen(dir) + 1, ".");
    else
        slash[slash == dir] = '\0';
    if (stat(dir, &st) != 0)
        e = errno;
    else if (!S_ISDIR(st.st_mode))
        e = ENOTDIR;
    else if (access(dir, W_OK | X_OK) != 0)
        e = errno;
done:
    free(dir);
    if (!e)
        return LAB_OK;
    snprintf(err, errlen, "cannot record to %s: %s", path, strerror(e));
    return LAB_EIO;
}

int lab_wirerec_start(lab_wirerec_t *r, const char *path, char *err, size_t errlen)
{
    /* Checked here, on the caller's thread, so that the operator reads why at once; the file
     * itself is made by the first event. */
    int rc = lab_wirerec_check_path(path, true, err, errlen);
    if (rc != LAB_OK) {
        pthread_mutex_lock(&r->lock);
        snprintf(r->error, sizeof r->error, "%s", err);
        pthread_mutex_unlock(&r->lock);
        return rc;
    }
    if (!atomic_load(&W.live)) { /* its start failed when r was made: once more */
        pthread_mutex_lock(&W.life);
        rc = writer_spawn();
        pthread_mutex_unlock(&W.life);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start the recording writer thread");
            return LAB_EIO;
        }
    }
    pthread_mutex_lock(&r->lock);
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
    writer_kick(r, 1);
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
        writer_kick(r, 1);
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
    writer_kick(r, 1);
    while (atomic_load(&W.live) && !r->retired &&
           (r->written < target || r->switch_pending || r->dropped_pending))
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
    if (atomic_load(&W.live)) {
        writer_kick(r, 1);
        while (!r->retired)
            pthread_cond_wait(&r->done, &r->lock);
    } else { /* never started: no file, and the writer must not find it later */
        r->retired = 1;
        writer_forget(r);
    }
    pthread_mutex_unlock(&r->lock);
    writer_release();
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
