/* labloop-sim --replay as a process, played against from the host's side: the fixtures'
 * recorded requests sent byte for byte on ptys (BioTek, STAR with other command ids) and as Modbus
 * TCP and RTU frames (CN7500) get the recorded replies; a request no recording saw is reported on
 * stderr with the byte where it parts from the nearest recorded one and gets no answer; the exit
 * status says so (3), at once with --strict. */
#include <errno.h>
#include <modbus.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "sim/replay.h"
#include "tests/harness/harness.h"

#define WAIT_MS 10000

static char fixture[4][600];

static void fixtures(void)
{
    static const char *const names[] = {"biotek_synergy", "star_liquid", "cn7500_minimalmodbus",
                                        "liconic_stx"};
    for (int i = 0; i < 4; i++)
        snprintf(fixture[i], sizeof fixture[i], "%s/tests/fixtures/wire/%s.jsonl", LAB_SOURCE_DIR_T,
                 names[i]);
}

static void load(replay_t *rp, const char *path)
{
    char err[512];
    if (replay_load(rp, path, err, sizeof err))
        fail_msg("%s", err);
}

/* Waits for a line of the simulator's log that holds needle. */
static int log_wait(const h_sim_t *s, const char *needle)
{
    for (long long end = h_now_ms() + WAIT_MS; h_now_ms() < end; h_sleep_ms(20))
        if (h_sim_log_count(s, needle) > 0)
            return 1;
    fprintf(stderr, "no log line with: %s\n", needle);
    return 0;
}

/* Sends each recorded request of a byte recording and checks the recorded reply comes back.
 * star_ids: the STAR's ids are replaced by others first (a later run numbers them anew). */
static void play(int fd, const char *path, int star_ids)
{
    replay_t rp;
    load(&rp, path);
    for (int i = 0; i < rp.n; i++) {
        const replay_xchg_t *x = &rp.x[i];
        char *req = malloc(x->req_len), *want = malloc(x->rsp_len + 1),
             *got = malloc(x->rsp_len + 1);
        memcpy(req, x->req, x->req_len);
        memcpy(want, x->rsp, x->rsp_len);
        if (star_ids) {
            char id[12];
            snprintf(id, sizeof id, "%04d", (9000 + i) % 10000);
            assert_memory_equal(req + 4, "id", 2);
            assert_memory_equal(want + 4, req + 4, 6); /* the reply echoes the request's id */
            memcpy(req + 6, id, 4);
            memcpy(want + 6, id, 4);
        }
        assert_int_equal(write(fd, req, x->req_len), (ssize_t)x->req_len);
        int n = h_read_exact(fd, got, x->rsp_len, WAIT_MS);
        if (n != (int)x->rsp_len || memcmp(got, want, x->rsp_len) != 0)
            fail_msg("%s line %d: %d of %zu reply bytes, or other bytes", path, x->line, n,
                     x->rsp_len);
        free(req);
        free(want);
        free(got);
    }
    replay_free(&rp);
}

static void test_replay_links(void **state)
{
    h_sim_t sim;
    char dir[256], ini[2048], reader[300], star[300];
    int port = h_free_port();
    assert_int_equal(h_tempdir("labreplay", dir, sizeof dir), 0);
    snprintf(reader, sizeof reader, "%s/reader.pty", dir);
    snprintf(star, sizeof star, "%s/star.pty", dir);
    snprintf(ini, sizeof ini,
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s\n"
             "[instrument cn7500]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\n",
             reader, star, port);
    const char *args[] = {"--replay", fixture[0], "--replay", fixture[1],
                          "--replay", fixture[2], NULL};
    assert_int_equal(h_sim_start_args(&sim, ini, args), 0);

    int rfd = h_tty_open(reader, WAIT_MS), sfd = h_tty_open(star, WAIT_MS);
    assert_true(rfd >= 0 && sfd >= 0);
    play(rfd, fixture[0], 0);
    play(sfd, fixture[1], 0);
    play(sfd, fixture[1], 1);

    /* CN7500 over Modbus TCP, as a Modbus client reads it (slave 10 in the recording) */
    modbus_t *mb = modbus_new_tcp("127.0.0.1", port);
    assert_non_null(mb);
    modbus_set_slave(mb, 10);
    modbus_set_response_timeout(mb, 2, 0);
    assert_int_equal(modbus_connect(mb), 0);
    uint16_t reg = 0;
    uint8_t bit = 0;
    assert_int_equal(modbus_read_registers(mb, 0x1000, 1, &reg), 1);
    assert_int_equal(reg, 250); /* 25.0 degC */
    assert_int_equal(modbus_read_input_bits(mb, 0x0814, 1, &bit), 1);
    assert_int_equal(bit, 1);
    uint16_t sv = 3258;
    assert_int_equal(modbus_write_registers(mb, 0x1001, 1, &sv), 1);
    assert_int_equal(h_sim_log_count(&sim, "never saw"), 0);

    /* unseen: the BioTek gets 'Z', which nothing recorded starts with */
    assert_int_equal(write(rfd, "Z", 1), 1);
    assert_true(log_wait(&sim, "reader1: first request the recording never saw (1 bytes): \"Z\"; "
                               "it differs at byte offset 0"));
    /* the run bit read as a coil (function 01) where the recording reads a discrete input (02) */
    modbus_set_response_timeout(mb, 0, 300000);
    assert_int_equal(modbus_read_bits(mb, 0x0814, 1, &bit), -1);
    assert_true(log_wait(&sim, "cn7500: first request the recording never saw (6 bytes): "
                               "\"unit 10: 01 08 14 00 01\"; it differs at byte offset 1"));
    /* a STAR command whose channel pattern differs: placed at that byte */
    const char *tp = "C0TPid0002xp01179 01179 00000&yp2418 2328 0000&tm1 0 0&tt01tp2244tz2164"
                     "th2450td0";
    assert_int_equal(write(sfd, tp, strlen(tp)), (ssize_t)strlen(tp));
    char needle[128];
    snprintf(needle, sizeof needle, "differs at byte offset %zu", strstr(tp, "tm1 0") - tp + 4);
    assert_true(log_wait(&sim, needle));
    char c;
    assert_int_equal(h_read_exact(rfd, &c, 1, 200), 0); /* nothing made up for 'Z' */

    modbus_close(mb);
    modbus_free(mb);
    close(rfd);
    close(sfd);
    assert_int_equal(h_sim_stop(&sim), 3);
    h_rmtree(dir);
}

/* Modbus RTU on a pty: minimalmodbus's recorded frames (tests/test_minimalmodbus.py at 785262db5f,
 * "Recorded data from OmegaCN7500", slave 10) byte for byte; --strict stops at the first unseen. */
static void test_replay_rtu_strict(void **state)
{
    h_sim_t sim;
    char dir[256], ini[1024], path[300];
    assert_int_equal(h_tempdir("labreplay", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/cn.pty", dir);
    snprintf(ini, sizeof ini,
             "[instrument cn7500]\ndriver = modbus-temperature\nmodbus = rtu:%s\n"
             "map = omega-cn7500\n",
             path);
    const char *args[] = {"--replay", fixture[2], "--strict", NULL};
    assert_int_equal(h_sim_start_args(&sim, ini, args), 0);
    int fd = h_tty_open(path, WAIT_MS);
    assert_true(fd >= 0);
    static const struct {
        const char *req, *rsp;
        size_t req_len, rsp_len;
    } frames[] = {
        {"\n\x03\x10\x00\x00\x01\x81\xb1", "\n\x03\x02\x00\xfa\x9d\xc6", 8, 7},
        {"\n\x02\x08\x14\x00\x01\xfa\xd5",
         "\n\x02\x01\x01"
         "bl",
         8, 6},
        {"\n\x10\x10\x01\x00\x01\x02\x00\xc8\xc4\xe6", "\n\x10\x10\x01\x00\x01U\xb2", 11, 8},
        {"\x01\x05\x08\x14\xff\x00\xce^", "\x01\x05\x08\x14\xff\x00\xce^", 8, 8},
    };
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        char got[16];
        assert_int_equal(write(fd, frames[i].req, frames[i].req_len), (ssize_t)frames[i].req_len);
        assert_int_equal(h_read_exact(fd, got, frames[i].rsp_len, WAIT_MS), (int)frames[i].rsp_len);
        assert_memory_equal(got, frames[i].rsp, frames[i].rsp_len);
    }
    assert_int_equal(h_sim_wait_exit(&sim, 0), -2); /* still serving */
    /* read_bit(2068) of slave 10 as a coil (01): not in the recording */
    assert_int_equal(write(fd, "\n\x01\x08\x14\x00\x01\xbe\xd5", 8), 8);
    assert_int_equal(h_sim_wait_exit(&sim, WAIT_MS), 3);
    assert_true(log_wait(&sim, "--strict: stopping"));
    close(fd);
    h_sim_stop(&sim);
    h_rmtree(dir);
}

/* Everything the host sent was recorded: exit status 0. */
static void test_replay_clean_exit(void **state)
{
    h_sim_t sim;
    char dir[256], ini[1024], reader[300];
    assert_int_equal(h_tempdir("labreplay", dir, sizeof dir), 0);
    snprintf(reader, sizeof reader, "%s/reader.pty", dir);
    snprintf(ini, sizeof ini, "[instrument reader1]\ndriver = biotek-synergy\nport = %s\n", reader);
    const char *args[] = {"--replay", fixture[0], NULL};
    assert_int_equal(h_sim_start_args(&sim, ini, args), 0);
    int fd = h_tty_open(reader, WAIT_MS);
    char got[9];
    assert_int_equal(write(fd, "h", 1), 1);
    assert_int_equal(h_read_exact(fd, got, 9, WAIT_MS), 9);
    assert_memory_equal(got,
                        "\x06"
                        "2360000\x03",
                        9); /* biotek_tests.py: 23.6 degC */
    close(fd);
    assert_int_equal(h_sim_stop(&sim), 0);
    h_rmtree(dir);
}

/* A recording of an instrument the configuration does not have, or a broken one: refused at
 * start with the reason. */
static void test_replay_refused(void **state)
{
    char dir[256], path[300], out[2048], cmd[2048];
    assert_int_equal(h_tempdir("labreplay", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/lab.ini", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "[instrument other]\ndriver = biotek-synergy\nport = %s/r.pty\n", dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -c %s --control %s/c.sock --replay %s 2>&1",
             getenv("LABLOOP_SIM"), path, dir, fixture[0]);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "the recording is of instrument 'reader1'"));
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    f = fopen(path, "w");
    fprintf(f, "{\"labloop_wire\":1,\"id\":\"other\"}\n{\"t\":1,\"wall\":\"w\",\"d\":\"tx\"}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -c %s/lab.ini --control %s/c.sock --replay %s 2>&1",
             getenv("LABLOOP_SIM"), dir, dir, path);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "bad.jsonl:2: \"hex\" missing"));
    h_rmtree(dir);
}

/* Sends req (its STAR id replaced by id) followed by term and reads the reply: want with its id
 * replaced, followed by term. */
static void star_term(int fd, const replay_xchg_t *x, int id, const char *term, int apart)
{
    char *req = malloc(x->req_len), *want = malloc(x->rsp_len + 2), *got = malloc(x->rsp_len + 3);
    char digits[12];
    size_t tl = strlen(term);
    snprintf(digits, sizeof digits, "%04d", id);
    memcpy(req, x->req, x->req_len);
    memcpy(want, x->rsp, x->rsp_len);
    memcpy(req + 6, digits, 4);
    memcpy(want + 6, digits, 4);
    memcpy(want + x->rsp_len, term, tl);
    assert_int_equal(write(fd, req, x->req_len), (ssize_t)x->req_len);
    if (apart) /* the terminator in a write of its own: the reply waits for it */
        h_sleep_ms(100);
    assert_int_equal(write(fd, term, tl), (ssize_t)tl);
    int n = h_read_exact(fd, got, x->rsp_len + tl, WAIT_MS);
    if (n != (int)(x->rsp_len + tl) || memcmp(got, want, x->rsp_len + tl) != 0)
        fail_msg("line %d: %d of %zu reply bytes, or other bytes", x->line, n, x->rsp_len + tl);
    assert_int_equal(h_read_exact(fd, got, 1, 100), 0); /* nothing more */
    free(req);
    free(want);
    free(got);
}

/* The STAR's USB recording (no terminator) played to a host on a pty that ends each command with
 * CR LF, as the driver does on serial links: each reply comes back with CR LF, also when the CR
 * LF comes in a write of its own. The Liconic fixture (PyLabRobot's liconic backend, commands
 * ending in CR as recorded) is answered as recorded. Nothing is unseen: exit status 0. */
static void test_replay_terminators(void **state)
{
    h_sim_t sim;
    char dir[256], ini[1024], star[300], stx[300];
    assert_int_equal(h_tempdir("labreplay", dir, sizeof dir), 0);
    snprintf(star, sizeof star, "%s/star.pty", dir);
    snprintf(stx, sizeof stx, "%s/stx.pty", dir);
    snprintf(ini, sizeof ini,
             "[instrument star1]\ndriver = hamilton-star\nport = %s\n"
             "[instrument stx1]\ndriver = liconic-stx\nport = %s\n"
             "rack_type = liconic_rack_17mm_22\n",
             star, stx);
    const char *args[] = {"--replay", fixture[1], "--replay", fixture[3], NULL};
    assert_int_equal(h_sim_start_args(&sim, ini, args), 0);
    int sfd = h_tty_open(star, WAIT_MS), lfd = h_tty_open(stx, WAIT_MS);
    assert_true(sfd >= 0 && lfd >= 0);

    replay_t rp;
    load(&rp, fixture[1]);
    for (int i = 0; i < rp.n; i++)
        star_term(sfd, &rp.x[i], 100 + i, "\r\n", i == 1);
    replay_free(&rp);
    play(lfd, fixture[3], 0);

    close(sfd);
    close(lfd);
    assert_int_equal(h_sim_log_count(&sim, "never saw"), 0);
    assert_int_equal(h_sim_stop(&sim), 0);
    h_rmtree(dir);
}

int main(void)
{
    fixtures();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_links),       cmocka_unit_test(test_replay_rtu_strict),
        cmocka_unit_test(test_replay_clean_exit),  cmocka_unit_test(test_replay_refused),
        cmocka_unit_test(test_replay_terminators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
