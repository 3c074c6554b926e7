/* labloop-sim start-up: configuration errors name file:line (the design response's among them), a
 * non-symlink at a port path is never overwritten, a stale symlink is replaced, the serial protocol
 * is served over tcp://, and a --fault given on the command line is in force from the start. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <modbus.h>
#include "protocols/biotek.h"
#include "tests/harness/harness.h"

static char dir[512];

static void write_ini(const char *body)
{
    char p[700];
    snprintf(p, sizeof p, "%s/labloop.ini", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
}

/* Runs labloop-sim to completion (it must fail at start) and returns its stderr. */
static int run_fail(char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s -c %s/labloop.ini --control %s/c.sock 2>&1",
             getenv("LABLOOP_SIM"), dir, dir);
    return h_run(cmd, out, cap);
}

static int setup(void **state)
{
    return h_tempdir("labsimcfg", dir, sizeof dir);
}

static int teardown(void **state)
{
    h_rmtree(dir);
    return 0;
}

/* Replaces every `from` in text (malloc'd, freed) by `to`; the new text. */
static char *replace_all(char *text, const char *from, const char *to)
{
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = text; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(text) + n * (tl + 1) + 1), *o = out;
    const char *p = text;
    for (const char *hit; (hit = strstr(p, from)); p = hit + fl) {
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, tl);
        o += tl;
    }
    strcpy(o, p);
    free(text);
    return out;
}

/* The README's first step: deploy/sim.ini.example played as it is on a fresh machine, where the
 * directory of its pty links (/tmp/labloop) does not exist yet. Its paths are moved under the
 * test's directory and its TCP ports to free ones; nothing else changes. */
static void test_example_on_a_fresh_machine(void **state)
{
    char path[600], fresh[600], port[32], link[700];
    snprintf(path, sizeof path, "%s/deploy/sim.ini.example", LAB_SOURCE_DIR_T);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    fclose(f);
    assert_true(n > 0 && strstr(text, "/tmp/labloop/"));
    snprintf(fresh, sizeof fresh, "%s/fresh/tmp/labloop/", dir);
    text = replace_all(text, "/tmp/labloop/", fresh);
    const char *tcp[] = {"127.0.0.1:7001", "127.0.0.1:1502"};
    for (int i = 0; i < 2; i++) {
        assert_non_null(strstr(text, tcp[i]));
        snprintf(port, sizeof port, "127.0.0.1:%d", h_free_port());
        text = replace_all(text, tcp[i], port);
    }
    h_sim_t s;
    int rc = h_sim_start(&s, text);
    free(text);
    assert_int_equal(rc, 0);
    const char *ids[] = {"incubator1", "star1"};
    for (int i = 0; i < 2; i++) {
        snprintf(link, sizeof link, "%s%s", fresh, ids[i]);
        struct stat st;
        assert_int_equal(lstat(link, &st), 0);
        assert_true(S_ISLNK(st.st_mode));
        assert_int_equal(stat(link, &st), 0);
        assert_true(S_ISCHR(st.st_mode)); /* the pty it stands for */
    }
    h_sim_stop(&s);
}

static void test_errors(void **state)
{
    char out[4096], ini[4096];
    write_ini("[labloop]\ntime_scale = 2\n\n[instrument x]\ndriver = liconic-stx\nrack_type = "
              "liconic_rack_17mm_22\n"
              "port = /tmp/none\n[instrument y]\ndriver = frobnicator\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:9: instrument 'y': unknown driver 'frobnicator'"));
    /* A Liconic needs its rack type, one of the table's (the handler's heights come from it). */
    write_ini("[instrument x]\ndriver = liconic-stx\nport = /tmp/none\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "instrument 'x': no rack_type"));
    write_ini("[instrument x]\ndriver = liconic-stx\nport = /tmp/none\nrack_type = 17mm\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:4: instrument 'x': unknown rack_type '17mm' (one of "
                                "liconic_rack_5mm_42|"));
    /* Per-cassette racks: every cassette from 1, once; never both forms. */
    write_ini("[instrument x]\ndriver = liconic-stx\nport = /tmp/none\n"
              "rack_types = 1:liconic_rack_17mm_22, 3:liconic_rack_44mm_10\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(
        strstr(out, "labloop.ini:1: instrument 'x': rack_types: cassette 2 is missing"));
    write_ini("[instrument x]\ndriver = liconic-stx\nport = /tmp/none\n"
              "rack_type = liconic_rack_17mm_22\nrack_types = 1:liconic_rack_17mm_22\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "instrument 'x': rack_type and rack_types are both given"));
    write_ini("[instrument x]\ndriver = liconic-stx\nport = /tmp/none\n"
              "rack_types = 1:liconic_rack_17mm_22\ncassettes = 0\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:5: instrument 'x': bad cassettes '0' (1..99)"));
    write_ini("[labloop]\ntime_scale = fast\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:2: time_scale"));
    write_ini("[instrument m]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:1502\n"
              "map = omega-cn9999\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:4: instrument 'm': unknown map"));
    write_ini("[instrument s]\ndriver = hamilton-star\n");
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "labloop.ini:1: instrument 's': no port"));
    /* the design response: a name twice, an optimum not above 0, a fourth reagent, A out of range
     */
    const char *design[][2] = {
        {"[labloop]\nsim_design = enzyme:42,enzyme:3\n",
         "labloop.ini:2: sim_design: reagent 'enzyme' is named twice"},
        {"[labloop]\ntime_scale = 2\nsim_design = enzyme:42, substrate:0\n",
         "labloop.ini:3: sim_design: substrate: optimal volume '0' is not a number of uL above 0"},
        {"[labloop]\nsim_design = a:1,b:2,c:3,d:4\n", "labloop.ini:2: sim_design: more than 3"},
        {"[labloop]\nsim_design = a:1\nsim_design_max = 0\n",
         "labloop.ini:3: sim_design_max: '0' is not in 0..9 AU"},
        {"[labloop]\nsim_design_max = 9.5\n", "labloop.ini:2: sim_design_max: '9.5'"},
    };
    for (size_t i = 0; i < sizeof design / sizeof design[0]; i++) {
        write_ini(design[i][0]);
        assert_int_not_equal(run_fail(out, sizeof out), 0);
        if (!strstr(out, design[i][1]))
            fail_msg("%s: \"%s\", expected \"%s\"", design[i][0], out, design[i][1]);
    }

    /* a regular file at the port path stays untouched */
    char file[700];
    snprintf(file, sizeof file, "%s/not-a-link", dir);
    FILE *f = fopen(file, "w");
    fputs("keep", f);
    fclose(f);
    snprintf(ini, sizeof ini, "[instrument s]\ndriver = hamilton-star\nport = %s\n", file);
    write_ini(ini);
    assert_int_not_equal(run_fail(out, sizeof out), 0);
    assert_non_null(strstr(out, "is not a symlink"));
    struct stat st;
    assert_int_equal(lstat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

static int read_until(int fd, char *buf, size_t cap, char end, int timeout_ms)
{
    size_t n = 0;
    long long deadline = h_now_ms() + timeout_ms;
    while (n + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        long long left = deadline - h_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        if (read(fd, buf + n, 1) != 1)
            return -1;
        if (buf[n++] == end)
            break;
    }
    buf[n] = 0;
    return (int)n;
}

static void test_tcp_stale_link_and_cli_fault(void **state)
{
    char link[700], ini[4096], ctl[700], cfgpath[700];
    snprintf(link, sizeof link, "%s/inc", dir);
    assert_int_equal(symlink("/nonexistent/pts/99", link), 0); /* stale, from a killed run */
    int port = h_free_port();
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 100\n[instrument inc]\ndriver = liconic-stx\nrack_type = "
             "liconic_rack_17mm_22\nport = %s\n"
             "[instrument star]\ndriver = hamilton-star\nport = tcp://127.0.0.1:%d\n",
             link, port);
    write_ini(ini);
    snprintf(ctl, sizeof ctl, "%s/c.sock", dir);
    snprintf(cfgpath, sizeof cfgpath, "%s/labloop.ini", dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl(getenv("LABLOOP_SIM"), "labloop-sim", "-c", cfgpath, "--control", ctl, "--fault",
              "inc:timeout", (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && lstat(ctl, &st); h_sleep_ms(20))
        ;
    char target[256] = {0};
    assert_true(readlink(link, target, sizeof target - 1) > 0);
    assert_non_null(strstr(target, "/dev/pts/"));

    /* --fault inc:timeout is in force from the start */
    int fd = open(link, O_RDWR | O_NOCTTY);
    assert_true(fd >= 0);
    char buf[256];
    assert_int_equal(write(fd, "CR\r", 3), 3);
    assert_int_equal(read_until(fd, buf, sizeof buf, '\n', 500), -1);
    close(fd);

    /* STAR over TCP */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(s, "C0XXid0042\r\n", 12), 12);
    assert_true(read_until(s, buf, sizeof buf, '\n', 10000) > 0);
    assert_string_equal(buf, "C0XXid0042er01/30\r\n");
    close(s);

    kill(pid, SIGTERM);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(lstat(link, &st), -1);
}

/* A 384-well reader over tcp:// and a Eurotherm 3200 (PV parameter 1, set point parameter 2, one
 * decimal as the simulator configures it). */
static void test_reader384_and_eurotherm(void **state)
{
    char ini[4096], ctl[700], cfgpath[700];
    int port = h_free_port(), mport = h_free_port();
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 100\n[instrument r]\ndriver = biotek-synergy\n"
             "port = tcp://127.0.0.1:%d\nsim_wells = 384\n"
             "[instrument e]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = eurotherm-3200\nsim_tau = 20\n",
             port, mport);
    write_ini(ini);
    snprintf(ctl, sizeof ctl, "%s/c.sock", dir);
    snprintf(cfgpath, sizeof cfgpath, "%s/labloop.ini", dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl(getenv("LABLOOP_SIM"), "labloop-sim", "-c", cfgpath, "--control", ctl, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && lstat(ctl, &st); h_sleep_ms(20))
        ;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    char buf[128];
    static char body[BIOTEK_FRAME_MAX + 1];
    assert_int_equal(write(s, "D", 1), 1);
    assert_int_equal(read_until(s, buf, sizeof buf, BIOTEK_ACK, 10000), 1);
    biotek_rect_t r = {1, 1, 16, 24};
    int n = biotek_encode_absorbance(&r, 600, buf, sizeof buf);
    assert_int_equal(write(s, buf, (size_t)n), n);
    assert_true(read_until(s, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    assert_int_equal(write(s, "O", 1), 1);
    assert_true(read_until(s, buf, sizeof buf, BIOTEK_ETX, 10000) > 0);
    n = read_until(s, body, sizeof body, BIOTEK_ETX, 10000);
    assert_true(n > 0);
    static biotek_plate_t p;
    assert_int_equal(biotek_parse_body(body, (size_t)n - 1, 16, 24, &p), LAB_OK);
    assert_int_equal(p.n_triples, 384);
    assert_true(p.value[15][23] < 0.1);                             /* nothing was dispensed */
    assert_true(strstr(body, ",16,24,") < strstr(body, ",16,01,")); /* row 16 runs backwards */
    /* A client gone after 'D' was ACKed and before its parameter (a daemon killed there): the
     * next connection is a session of its own, its 'e' is answered, not taken as the parameter. */
    assert_int_equal(write(s, "D", 1), 1);
    assert_int_equal(read_until(s, buf, sizeof buf, BIOTEK_ACK, 10000), 1);
    close(s);
    s = -1;
    for (long long end = h_now_ms() + 5000; h_now_ms() < end && s < 0; h_sleep_ms(20)) {
        s = socket(AF_INET, SOCK_STREAM, 0); /* the simulator takes one client at a time */
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0 || write(s, "e", 1) != 1 ||
            read_until(s, buf, sizeof buf, BIOTEK_ETX, 1000) <= 0) {
            close(s);
            s = -1;
        }
    }
    assert_true(s >= 0);
    assert_non_null(strstr(buf, "Version"));
    close(s);

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", mport);
    modbus_set_slave(ctx, 1);
    assert_int_equal(modbus_connect(ctx), 0);
    assert_int_equal(modbus_write_register(ctx, 2, 450), 1);
    uint16_t w = 0;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end && (int16_t)w < 440; h_sleep_ms(50))
        assert_int_equal(modbus_read_registers(ctx, 1, 1, &w), 1);
    assert_true((int16_t)w >= 440);
    modbus_close(ctx);
    modbus_free(ctx);

    kill(pid, SIGTERM);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tcp_stale_link_and_cli_fault),
        cmocka_unit_test(test_reader384_and_eurotherm),
        cmocka_unit_test(test_example_on_a_fresh_machine),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
