/* The wire recorder (drivers/transport/wirerec.c): the file format (header, hex exact with NUL
 * and 0xff bytes, JSON-escaped text, lab and wall time), rotation by size with the kept count,
 * drop counting with a tiny buffer (every event is either in the file or counted in a note),
 * off and on again, an unwritable path refused at start, the path check itself, the file made
 * by the first event only; fifty recorders fed by five threads at once, each file its own and
 * whole, one of them failing alone, all served by one writer thread; and the generic
 * transport's hooks: tx, rx, open, break and offline of a tty transport on a real pty, recorded
 * without the backend knowing. */
#include "core/err.h"
#include "drivers/transport/transport.h"
#include "drivers/transport/wirerec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <pty.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/wirerec.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Every line of a file, parsed; the raw lines beside. */
typedef struct lines {
    json_t *v[4096];
    char *raw[4096];
    int n;
} lines_t;

static void lines_read(lines_t *l, const char *path)
{
    memset(l, 0, sizeof *l);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0 && l->n < 4096) {
        assert_int_equal(line[len - 1], '\n');
        json_error_t je;
        l->v[l->n] = json_loadb(line, (size_t)len, 0, &je);
        if (!l->v[l->n])
            fail_msg("line %d of %s is not JSON: %s (%s)", l->n + 1, path, line, je.text);
        l->raw[l->n++] = strdup(line);
    }
    free(line);
    fclose(f);
}

static void lines_free(lines_t *l)
{
    for (int i = 0; i < l->n; i++) {
        json_decref(l->v[i]);
        free(l->raw[i]);
    }
}

static const char *s_of(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static lab_wirerec_t *rec_new(const char *id, uint64_t max_bytes, unsigned keep, size_t buf)
{
    lab_wirerec_opts_t o = {.id = id,
                            .driver = "test-driver",
                            .max_bytes = max_bytes,
                            .keep = keep,
                            .buffer_bytes = buf};
    return lab_wirerec_new(&o);
}

static void test_format(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/r.wire", dir);
    lab_wirerec_t *r = rec_new("reader1", 0, 4, 0);
    lab_wirerec_set_link(r, "serial", "9600 8N2 rtscts");
    char err[300];
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    static const uint8_t tx[] = {0x00, 0xff, 0x44, 0x0d, 0x80, 0x7f};
    static const uint8_t rx[] = {0x06, 0x00};
    static const uint8_t pdu[] = {0x03, 0x10, 0x00, 0x00, 0x01};
    static const uint8_t exc[] = {0x83, 0x02};
    lab_wirerec_bytes(r, "tx", tx, sizeof tx);
    lab_wirerec_bytes(r, "rx", rx, sizeof rx);
    lab_wirerec_pdu(r, "req", 7, pdu, sizeof pdu);
    lab_wirerec_pdu(r, "rsp", 7, exc, sizeof exc);
    lab_wirerec_event(r, "note", "a \"quoted\"\ttab\nnewline \\ and \xff bad byte");
    lab_wirerec_event(r, "timeout", NULL);
    lab_wirerec_flush(r);
    lab_wirerec_status_t st;
    lab_wirerec_status(r, &st);
    assert_true(st.on);
    assert_string_equal(st.path, path);
    assert_int_equal(st.events, 6);
    assert_int_equal(st.dropped, 0);
    lab_wirerec_close(r);

    lines_t l;
    lines_read(&l, path);
    assert_int_equal(l.n, 7);
    assert_int_equal(json_integer_value(json_object_get(l.v[0], "labloop_wire")), 1);
    assert_string_equal(s_of(l.v[0], "id"), "reader1");
    assert_string_equal(s_of(l.v[0], "driver"), "test-driver");
    assert_string_equal(s_of(l.v[0], "transport"), "serial");
    assert_string_equal(s_of(l.v[0], "settings"), "9600 8N2 rtscts");
    regex_t re;
    assert_int_equal(
        regcomp(&re,
                "^\\{\"t\":[0-9]+\\.[0-9]{3},\"wall\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]"
                "{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\",\"d\":\"(tx|rx|req|rsp|ev)\"",
                REG_EXTENDED | REG_NOSUB),
        0);
    for (int i = 1; i < l.n; i++)
        if (regexec(&re, l.raw[i], 0, NULL, 0) != 0)
            fail_msg("line %d does not start with t, wall and d: %s", i + 1, l.raw[i]);
    regfree(&re);
    assert_string_equal(s_of(l.v[1], "d"), "tx");
    assert_string_equal(s_of(l.v[1], "hex"), "00ff440d807f");
    assert_string_equal(s_of(l.v[2], "d"), "rx");
    assert_string_equal(s_of(l.v[2], "hex"), "0600");
    assert_string_equal(s_of(l.v[3], "d"), "req");
    assert_int_equal(json_integer_value(json_object_get(l.v[3], "unit")), 7);
    assert_string_equal(s_of(l.v[3], "hex"), "0310000001");
    assert_string_equal(s_of(l.v[4], "d"), "rsp");
    assert_string_equal(s_of(l.v[4], "hex"), "8302");
    assert_string_equal(s_of(l.v[5], "d"), "ev");
    assert_string_equal(s_of(l.v[5], "ev"), "note");
    assert_string_equal(s_of(l.v[5], "text"),
                        "a \"quoted\"\ttab\nnewline \\ and \xef\xbf\xbd bad byte");
    assert_string_equal(s_of(l.v[6], "ev"), "timeout");
    assert_null(json_object_get(l.v[6], "text"));
    /* Lab time without a lab clock is the wall clock: the two agree to the millisecond. */
    double t = json_real_value(json_object_get(l.v[1], "t"));
    assert_true(t > 1.7e9);
    lines_free(&l);
}

static void test_rotation(void **state)
{
    (void)state;
    char path[128], p[160];
    snprintf(path, sizeof path, "%s/rot.wire", dir);
    lab_wirerec_t *r = rec_new("rot", 600, 2, 0);
    char err[300];
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    uint8_t b[40];
    for (int i = 0; i < 60; i++) {
        memset(b, i, sizeof b);
        lab_wirerec_bytes(r, "tx", b, sizeof b);
    }
    lab_wirerec_close(r);
    struct stat st;
    snprintf(p, sizeof p, "%s.3", path);
    assert_int_not_equal(stat(p, &st), 0); /* only two kept */
    int last = -1;
    for (int k = 2; k >= 0; k--) { /* oldest first: the byte values grow across the files */
        if (k)
            snprintf(p, sizeof p, "%s.%d", path, k);
        else
            snprintf(p, sizeof p, "%s", path);
        assert_int_equal(stat(p, &st), 0);
        lines_t l;
        lines_read(&l, p);
        assert_true(l.n >= (k ? 2 : 1));
        assert_int_equal(json_integer_value(json_object_get(l.v[0], "labloop_wire")), 1);
        size_t line_max = l.n > 1 ? strlen(l.raw[1]) : 0;
        if (k) /* a file rotates on the line that passes the limit */
            assert_true((uint64_t)st.st_size >= 600 && (uint64_t)st.st_size < 600 + line_max);
        for (int i = 1; i < l.n; i++) {
            char two[3] = {s_of(l.v[i], "hex")[0], s_of(l.v[i], "hex")[1], 0};
            int v = (int)strtol(two, NULL, 16);
            if (last < 0) /* the oldest events went with the files not kept */
                last = v - 1;
            assert_int_equal(v, last + 1);
            last = v;
        }
        lines_free(&l);
    }
    assert_int_equal(last, 59); /* the newest event is in the live file */
}

/* A tiny buffer: every event appended is either in the file or counted in a note. */
static void test_drops_counted(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/drop.wire", dir);
    lab_wirerec_t *r = rec_new("drop", 1ull << 40, 1, 4096);
    char err[300];
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    uint8_t big[4000] = {0}, small[100] = {0};
    lab_wirerec_bytes(r, "rx", big, sizeof big); /* can never fit in 4096 bytes: dropped */
    enum { N = 20000 };
    for (int i = 0; i < N; i++)
        lab_wirerec_bytes(r, "tx", small, sizeof small);
    lab_wirerec_flush(r);
    lab_wirerec_status_t st;
    lab_wirerec_status(r, &st);
    lab_wirerec_close(r);
    assert_true(st.dropped >= 1);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    long tx = 0, noted = 0, notes = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *v = json_loads(line, 0, NULL);
        assert_non_null(v);
        if (strcmp(s_of(v, "d"), "tx") == 0) {
            tx++;
        } else if (strcmp(s_of(v, "ev"), "note") == 0) {
            notes++;
            noted += strtol(s_of(v, "text"), NULL, 10);
            assert_non_null(strstr(s_of(v, "text"), "events dropped"));
        }
        json_decref(v);
    }
    free(line);
    fclose(f);
    assert_true(notes >= 1);
    assert_int_equal(noted, (long)st.dropped);
    assert_int_equal(tx + noted, N + 1);
}

static void test_off_on_and_bad_path(void **state)
{
    (void)state;
    char path[128], p1[160], err[300] = "";
    snprintf(path, sizeof path, "%s/oo.wire", dir);
    snprintf(p1, sizeof p1, "%s.1", path);
    lab_wirerec_t *r = rec_new("oo", 0, 3, 0);
    static const uint8_t a[] = {0xaa}, b[] = {0xbb}, c[] = {0xcc};
    lab_wirerec_bytes(r, "tx", a, 1); /* off: nothing */
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    lab_wirerec_bytes(r, "tx", a, 1);
    lab_wirerec_flush(r);
    lab_wirerec_stop(r);
    assert_false(lab_wirerec_on(r));
    lab_wirerec_bytes(r, "tx", b, 1); /* off again: not recorded */
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    lab_wirerec_bytes(r, "tx", c, 1);
    lab_wirerec_flush(r);

    /* A path under a regular file: refused with the path and the reason; still off. */
    lab_wirerec_t *bad = rec_new("bad", 0, 1, 0);
    char plain[160], badpath[200];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    FILE *pf = fopen(plain, "w");
    assert_non_null(pf);
    fclose(pf);
    snprintf(badpath, sizeof badpath, "%s/x.wire", plain);
    assert_int_equal(lab_wirerec_start(bad, badpath, err, sizeof err), LAB_EIO);
    assert_non_null(strstr(err, badpath));
    assert_non_null(strstr(err, "Not a directory"));
    assert_false(lab_wirerec_on(bad));
    lab_wirerec_status_t st;
    lab_wirerec_status(bad, &st);
    assert_string_equal(st.error, err);
    lab_wirerec_close(bad);
    lab_wirerec_close(r);

    lines_t l;
    lines_read(&l, p1); /* the first session, rotated away when recording started again */
    assert_int_equal(l.n, 2);
    assert_string_equal(s_of(l.v[1], "hex"), "aa");
    lines_free(&l);
    lines_read(&l, path);
    assert_int_equal(l.n, 2);
    assert_int_equal(json_integer_value(json_object_get(l.v[0], "labloop_wire")), 1);
    assert_string_equal(s_of(l.v[1], "hex"), "cc");
    lines_free(&l);
}

/* No event, no file: a session that records nothing leaves nothing behind, and leaves the
 * previous file where it is; the first event rotates it away and starts the new one. */
static void test_file_made_by_first_event(void **state)
{
    (void)state;
    char path[128], p1[160], err[300];
    snprintf(path, sizeof path, "%s/lazy.wire", dir);
    snprintf(p1, sizeof p1, "%s.1", path);
    lab_wirerec_t *r = rec_new("lazy", 0, 2, 0);
    lab_wirerec_set_link(r, "serial", "9600 8N1");
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    lab_wirerec_flush(r);
    lab_wirerec_stop(r);
    lab_wirerec_flush(r);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(errno, ENOENT);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"labloop_wire\":1,\"id\":\"earlier\"}\n", f);
    fclose(f);
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    lab_wirerec_flush(r);
    lab_wirerec_stop(r);
    lab_wirerec_flush(r);
    assert_int_not_equal(stat(p1, &st), 0); /* not rotated: nothing replaced it */
    lines_t l;
    lines_read(&l, path);
    assert_int_equal(l.n, 1);
    assert_string_equal(s_of(l.v[0], "id"), "earlier");
    lines_free(&l);

    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);
    static const uint8_t b[] = {0x42};
    lab_wirerec_bytes(r, "tx", b, 1);
    lab_wirerec_close(r);
    lines_read(&l, p1);
    assert_int_equal(l.n, 1);
    assert_string_equal(s_of(l.v[0], "id"), "earlier");
    lines_free(&l);
    lines_read(&l, path);
    assert_int_equal(l.n, 2);
    assert_string_equal(s_of(l.v[0], "id"), "lazy");
    assert_string_equal(s_of(l.v[0], "settings"), "9600 8N1");
    assert_string_equal(s_of(l.v[1], "hex"), "42");
    lines_free(&l);
}

/* What start and `labloopd --check` accept, and why they refuse. */
static void test_check_path(void **state)
{
    (void)state;
    char p[200], err[300], plain[160];
    struct stat st;
    snprintf(plain, sizeof plain, "%s/plain", dir);
    FILE *f = fopen(plain, "w");
    assert_non_null(f);
    fclose(f);
    const struct {
        const char *rel; /* under dir */
        bool make;
        const char *why; /* NULL: accepted */
    } cases[] = {
        {"/x.wire", false, NULL},
        {"/plain", false, NULL},                /* an existing file: rotated, never appended */
        {"/new/x.wire", false, NULL},           /* the last directory would be made */
        {"/a/b/x.wire", false, "No such file"}, /* only the last one */
        {"/a/b/x.wire", true, "No such file"},  /* nor at start */
        {"/plain/x.wire", false, "Not a directory"},
        {"/plain/d/x.wire", false, "Not a directory"},
        {"/plain/d/x.wire", true, "Not a directory"},
        {"", false, "Is a directory"}, /* dir itself */
        {"/made/x.wire", true, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s%s", dir, cases[i].rel);
        err[0] = '\0';
        int rc = lab_wirerec_check_path(p, cases[i].make, err, sizeof err);
        if (!cases[i].why) {
            if (rc != LAB_OK)
                fail_msg("%s refused: %s", p, err);
        } else {
            assert_int_equal(rc, LAB_EIO);
            if (!strstr(err, cases[i].why) || !strstr(err, p))
                fail_msg("%s: \"%s\" does not say %s", p, err, cases[i].why);
        }
    }
    snprintf(p, sizeof p, "%s/new", dir);
    assert_int_not_equal(stat(p, &st), 0); /* judged, not made */
    snprintf(p, sizeof p, "%s/made", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    snprintf(p, sizeof p, "%s/x.wire", dir);
    assert_int_not_equal(stat(p, &st), 0); /* no file is made */
    assert_int_equal(lab_wirerec_check_path("", false, err, sizeof err), LAB_EINVAL);
}

/* ---- many recorders, one writer ---- */

enum { MANY = 50, PRODUCERS = 5, PER_REC = 400 };

typedef struct producer {
    pthread_t th;
    int k;
    lab_wirerec_t **recs;
    lab_wirerec_t *bad;
} producer_t;

/* Producer k feeds recorders k, k + PRODUCERS, ... in turn: event s of recorder i is the bytes
 * i, s >> 8, s & 255 (so a line in the wrong file or out of order shows). */
static void *produce(void *arg)
{
    producer_t *p = arg;
    for (int s = 0; s < PER_REC; s++) {
        for (int i = p->k; i < MANY; i += PRODUCERS) {
            uint8_t b[3] = {(uint8_t)i, (uint8_t)(s >> 8), (uint8_t)s};
            lab_wirerec_bytes(p->recs[i], s % 2 ? "rx" : "tx", b, sizeof b);
        }
        if (p->bad)
            lab_wirerec_event(p->bad, "note", "into a directory that is gone");
    }
    return NULL;
}

static int tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_many_recorders_one_writer(void **state)
{
    (void)state;
    assert_int_equal(lab_wirerec_writer_threads(), 0); /* no recorder alive: no thread */
    int base = tasks();
    char path[200], err[300], gone[128];
    lab_wirerec_t *recs[MANY];
    for (int i = 0; i < MANY; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        /* Small files: every recorder rotates while the others write. */
        recs[i] = rec_new(id, 4096, 100, 0);
        snprintf(path, sizeof path, "%s/%s.wire", dir, id);
        assert_int_equal(lab_wirerec_start(recs[i], path, err, sizeof err), LAB_OK);
    }
    /* One whose directory goes away after its start: its events are lost and counted, its
     * error is its own, and the writer goes on with the others. */
    snprintf(gone, sizeof gone, "%s/gone", dir);
    assert_int_equal(mkdir(gone, 0755), 0);
    lab_wirerec_t *bad = rec_new("bad", 0, 1, 0);
    snprintf(path, sizeof path, "%s/bad.wire", gone);
    assert_int_equal(lab_wirerec_start(bad, path, err, sizeof err), LAB_OK);
    assert_int_equal(rmdir(gone), 0);
    assert_int_equal(lab_wirerec_writer_threads(), 1);
    assert_int_equal(tasks(), base + 1);

    producer_t prod[PRODUCERS];
    for (int k = 0; k < PRODUCERS; k++) {
        prod[k] = (producer_t){.k = k, .recs = recs, .bad = k == 0 ? bad : NULL};
        assert_int_equal(pthread_create(&prod[k].th, NULL, produce, &prod[k]), 0);
    }
    for (int k = 0; k < PRODUCERS; k++)
        pthread_join(prod[k].th, NULL);
    assert_int_equal(tasks(), base + 1); /* fifty recordings, one writer */
    lab_wirerec_status_t st;
    for (int i = 0; i < MANY; i++) {
        lab_wirerec_flush(recs[i]);
        lab_wirerec_status(recs[i], &st);
        assert_int_equal(st.events, PER_REC);
        assert_int_equal(st.dropped, 0);
        assert_string_equal(st.error, "");
    }
    lab_wirerec_flush(bad);
    lab_wirerec_status(bad, &st);
    assert_int_equal(st.events, 0);
    assert_int_equal(st.dropped, PER_REC);
    if (!strstr(st.error, "bad.wire: No such file or directory"))
        fail_msg("the failing recorder says: %s", st.error);

    for (int i = 0; i < MANY; i++)
        lab_wirerec_close(recs[i]);
    lab_wirerec_close(bad);
    assert_int_equal(lab_wirerec_writer_threads(), 0); /* ended with the last recorder */
    assert_int_equal(tasks(), base);

    /* Each recorder's files, oldest first, hold its own events and all of them, in order. */
    for (int i = 0; i < MANY; i++) {
        int next = 0;
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        int oldest = 0;
        struct stat sb;
        for (;; oldest++) {
            snprintf(path, sizeof path, "%s/%s.wire.%d", dir, id, oldest + 1);
            if (stat(path, &sb) != 0)
                break;
        }
        assert_true(oldest >= 2); /* it rotated */
        for (int k = oldest; k >= 0; k--) {
            if (k)
                snprintf(path, sizeof path, "%s/%s.wire.%d", dir, id, k);
            else
                snprintf(path, sizeof path, "%s/%s.wire", dir, id);
            lines_t l;
            lines_read(&l, path);
            assert_string_equal(s_of(l.v[0], "id"), id);
            for (int j = 1; j < l.n; j++) {
                char want[24];
                snprintf(want, sizeof want, "%02x%04x", i, next);
                if (strcmp(s_of(l.v[j], "hex"), want) != 0 ||
                    strcmp(s_of(l.v[j], "d"), next % 2 ? "rx" : "tx") != 0)
                    fail_msg("%s line %d: %s, not %s", path, j + 1, l.raw[j], want);
                next++;
            }
            lines_free(&l);
        }
        assert_int_equal(next, PER_REC);
    }
}

/* ---- the generic transport's hooks, on a tty transport and a pty ---- */

typedef struct tfx {
    uv_loop_t loop;
    uv_timer_t beat;
    lab_transport_state_t state;
    uint8_t rx[64];
    size_t rx_len;
    int break_done;
} tfx_t;

static void on_data(lab_transport_t *t, const uint8_t *d, size_t n, void *user)
{
    (void)t;
    tfx_t *f = user;
    memcpy(f->rx + f->rx_len, d, n < sizeof f->rx - f->rx_len ? n : sizeof f->rx - f->rx_len);
    f->rx_len += n;
}

static void on_state(lab_transport_t *t, lab_transport_state_t s, int err, const char *reason,
                     void *user)
{
    (void)t, (void)err, (void)reason;
    ((tfx_t *)user)->state = s;
}

static void on_break(lab_transport_t *t, int status, void *arg)
{
    (void)t, (void)status;
    ((tfx_t *)arg)->break_done = 1;
}

static void on_beat(uv_timer_t *t)
{
    (void)t;
}

#define TWAIT(f, cond)                                                                             \
    do {                                                                                           \
        uint64_t end_ = uv_hrtime() / 1000000u + 10000;                                            \
        while (!(cond) && uv_hrtime() / 1000000u < end_)                                           \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
        assert_true(cond);                                                                         \
    } while (0)

static void test_transport_hooks(void **state)
{
    (void)state;
    tfx_t f;
    memset(&f, 0, sizeof f);
    uv_loop_init(&f.loop);
    uv_timer_init(&f.loop, &f.beat);
    uv_timer_start(&f.beat, on_beat, 5, 5);
    int master, slave;
    char name[128];
    assert_int_equal(openpty(&master, &slave, name, NULL, NULL), 0);
    char path[128], err[300];
    snprintf(path, sizeof path, "%s/tty.wire", dir);
    lab_wirerec_t *r = rec_new("tty1", 0, 1, 0);
    assert_int_equal(lab_wirerec_start(r, path, err, sizeof err), LAB_OK);

    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = LAB_TRANSPORT_TTY;
    s.path = name;
    s.stop_bits = 2;
    s.flow = LAB_FLOW_RTSCTS;
    lab_transport_callbacks_t cb = {on_data, on_state, &f};
    lab_transport_t *t;
    assert_int_equal(lab_transport_new(&f.loop, &s, "tty1", &cb, &t, err, sizeof err), LAB_OK);
    assert_int_equal(lab_transport_open(t), LAB_OK);
    TWAIT(&f, f.state == LAB_TRANSPORT_OPEN);
    static const uint8_t cmd[] = {0x00, 0xff, 'D', '\r'};
    assert_int_equal(lab_transport_write(t, cmd, sizeof cmd, NULL, NULL), LAB_OK);
    uint8_t got[8];
    size_t n = 0;
    while (n < sizeof cmd) {
        ssize_t k = read(master, got + n, sizeof got - n);
        assert_true(k > 0);
        n += (size_t)k;
    }
    assert_memory_equal(got, cmd, sizeof cmd);
    static const uint8_t reply[] = {0x06, 0x00, 0xff, 0x03};
    assert_int_equal(write(master, reply, sizeof reply), (ssize_t)sizeof reply);
    TWAIT(&f, f.rx_len == sizeof reply);
    assert_int_equal(lab_transport_send_break(t, 10, on_break, &f), LAB_OK);
    TWAIT(&f, f.break_done);
    close(master); /* the device goes away */
    TWAIT(&f, f.state == LAB_TRANSPORT_OFFLINE);
    lab_transport_close(t);
    close(slave);
    uv_close((uv_handle_t *)&f.beat, NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    uv_loop_close(&f.loop);
    lab_wirerec_close(r);

    lines_t l;
    lines_read(&l, path);
    assert_string_equal(s_of(l.v[0], "transport"), "tty");
    assert_string_equal(s_of(l.v[0], "settings"), "9600 8N2 rtscts");
    const char *want[][2] = {
        {"ev", "open"}, {"tx", "00ff440d"}, {"rx", NULL}, {"ev", "break"}, {"ev", "offline"}};
    int i = 1;
    char rxhex[64] = "";
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        assert_true(i < l.n);
        assert_string_equal(s_of(l.v[i], "d"), want[w][0]);
        if (strcmp(want[w][0], "rx") == 0) { /* one read or several: together the reply */
            while (i < l.n && strcmp(s_of(l.v[i], "d"), "rx") == 0)
                strcat(rxhex, s_of(l.v[i++], "hex"));
            assert_string_equal(rxhex, "0600ff03");
            continue;
        }
        if (strcmp(want[w][0], "ev") != 0)
            assert_string_equal(s_of(l.v[i], "hex"), want[w][1]);
        else
            assert_string_equal(s_of(l.v[i], "ev"), want[w][1]);
        if (strcmp(want[w][1], "break") == 0)
            assert_string_equal(s_of(l.v[i], "text"), "ms=10");
        i++;
    }
    assert_int_equal(i, l.n);
    lines_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drops_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_off_on_and_bad_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_made_by_first_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_recorders_one_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_hooks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
