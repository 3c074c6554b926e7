/* Hamilton STAR codec on command and reply strings from PyLabRobot's STAR tests
 * (pylabrobot/legacy/liquid_handling/backends/hamilton/STAR_tests.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/star.h"
#include "tests/harness/star_plr.h"

static void test_tip_pickup_command(void **state)
{
    /* test_tip_pickup_01: 2 of 8 channels, lists shorter than 8 end with '&'. */
    const char golden[] =
        "C0TPid0002xp01179 01179 00000&yp2418 2328 0000&tm1 1 0&tt01tp2244tz2164th2450td0";
    char buf[256];
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "TP", 2);
    star_list(&b, "xp", (long[]){1179, 1179, 0}, 3, 5, 8);
    star_list(&b, "yp", (long[]){2418, 2328, 0}, 3, 4, 8);
    star_list(&b, "tm", (long[]){1, 1, 0}, 3, 1, 8);
    star_int(&b, "tt", 1, 2);
    star_int(&b, "tp", 2244, 4);
    star_int(&b, "tz", 2164, 4);
    star_int(&b, "th", 2450, 4);
    star_int(&b, "td", 0, 1);
    int n = star_end(&b, 0);
    assert_int_equal(n, (int)strlen(golden));
    assert_memory_equal(buf, golden, (size_t)n);

    /* The simulator reads it back. */
    star_msg_t m;
    assert_int_equal(star_parse(golden, strlen(golden), &m), LAB_OK);
    assert_string_equal(m.module, "C0");
    assert_string_equal(m.cmd, "TP");
    assert_int_equal(m.id, 2);
    long xp[8], th;
    size_t nxp;
    assert_int_equal(star_param_list(&m, "xp", xp, 8, &nxp), LAB_OK);
    assert_int_equal(nxp, 3);
    assert_int_equal(xp[1], 1179);
    assert_int_equal(star_param_int(&m, "th", &th), LAB_OK);
    assert_int_equal(th, 2450);
    assert_false(star_msg_failed(&m));
}

static void test_aspirate_and_drop_commands_parse(void **state)
{
    /* test_single_channel_aspiration (C0AS) and test_tip_drop_56 (C0TR). */
    const char as[] = "C0ASid0001at0 0&tm1 0&xp02983 00000&yp1457 0000&th2450te2450lp2000 2000&"
                      "ch000 000&zl1866 1866&po0100 0100&zu0032 0032&zr06180 06180&zx1866 1866&"
                      "ip0000 0000&it0 0&fp0000 0000&av01072 01072&as1000 1000&ta000 000&"
                      "ba0000 0000&oa000 000&lm0 0&ll1 1&lv1 1&zo000 000&ld00 00&de0020 0020&"
                      "wt10 10&mv00000 00000&mc00 00&mp000 000&ms1000 1000&mh0000 0000&"
                      "gi000 000&gj0gk0lk0 0&ik0000 0000&sd0500 0500&se0500 0500&sz0300 0300&"
                      "io0000 0000&";
    star_msg_t m;
    assert_int_equal(star_parse(as, strlen(as), &m), LAB_OK);
    assert_string_equal(m.cmd, "AS");
    char which[3];
    assert_int_equal(star_check_cmd(&m, 8, which), 0);
    long v[8];
    size_t n;
    assert_int_equal(star_param_list(&m, "av", v, 8, &n), LAB_OK);
    assert_int_equal(n, 2);
    assert_int_equal(v[0], 1072);
    long gj;
    assert_int_equal(star_param_int(&m, "gj", &gj), LAB_OK);
    assert_int_equal(gj, 0);
    assert_int_equal(star_param_list(&m, "xx", v, 8, &n), LAB_EUNKNOWN);

    const char tr[] = "C0TRid0003xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 "
                      "0000 2058 1968 0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1";
    assert_int_equal(star_parse(tr, strlen(tr), &m), LAB_OK);
    assert_int_equal(m.id, 3);
    assert_int_equal(star_param_list(&m, "tm", v, 8, &n), LAB_OK);
    assert_int_equal(n, 7);
    assert_int_equal(v[4], 1);
    /* A list longer than the caller's array is refused, not overrun. */
    assert_int_equal(star_param_list(&m, "xp", v, 3, &n), LAB_ENOSPACE);

    /* The C0TR reply: 8 values per list, no '&'. */
    const char reply[] = "C0TRid0003kz000 000 000 000 000 000 000 000vz000 000 000 000 000 000 "
                         "000 000";
    assert_int_equal(star_parse(reply, strlen(reply), &m), LAB_OK);
    assert_int_equal(star_param_list(&m, "kz", v, 8, &n), LAB_OK);
    assert_int_equal(n, 8);
}

static void test_reply_errors(void **state)
{
    /* test_parse_response_no_errors / master_error / slave_errors / slave_response_errors. */
    star_msg_t m;
    const char ok[] = "C0QMid1111 er00/00 P100/00";
    assert_int_equal(star_parse(ok, strlen(ok), &m), LAB_OK);
    assert_int_equal(m.id, 1111);
    assert_true(m.has_er);
    assert_false(star_msg_failed(&m));

    const char master[] = "C0QMid1111 er01/30";
    assert_int_equal(star_parse(master, strlen(master), &m), LAB_OK);
    assert_int_equal(m.n_errors, 1);
    assert_string_equal(m.errors[0].module_name, "Master");
    assert_string_equal(m.errors[0].code_text, "Command syntax error");
    assert_string_equal(m.errors[0].trace_text, "Unknown command");

    const char slaves[] = "C0QMid1111 er99/00 P100/00 P235/00 P402/98 PG08/76";
    assert_int_equal(star_parse(slaves, strlen(slaves), &m), LAB_OK);
    assert_int_equal(m.n_errors, 4);
    assert_int_equal(m.errors[0].code, 99);
    assert_string_equal(m.errors[0].code_text, "Slave error");
    assert_string_equal(m.errors[1].module, "P2");
    assert_int_equal(m.errors[1].code, 35);
    assert_null(m.errors[1].code_text);
    assert_string_equal(m.errors[1].trace_text, "No error");
    assert_string_equal(m.errors[2].module_name, "Pipetting channel 4");
    assert_string_equal(m.errors[2].code_text, "Hardware error");
    assert_int_equal(m.errors[2].trace, 98);
    assert_null(m.errors[2].trace_text);
    assert_string_equal(m.errors[3].module_name, "Pipetting channel 16");
    assert_string_equal(m.errors[3].code_text, "No tips");
    assert_string_equal(m.errors[3].trace_text, "Tip already picked up");

    const char slave[] = "P1OQid1111er30";
    assert_int_equal(star_parse(slave, strlen(slave), &m), LAB_OK);
    assert_int_equal(m.n_errors, 1);
    assert_int_equal(m.errors[0].code, -1);
    assert_string_equal(m.errors[0].module_name, "Pipetting channel 1");
    assert_string_equal(m.errors[0].trace_text, "Unknown command");

    /* test barcode replies: er followed directly by a parameter. */
    const char bc[] = "C0ZBid0001er00/00bb/08ABCDEFGH";
    assert_int_equal(star_parse(bc, strlen(bc), &m), LAB_OK);
    assert_false(star_msg_failed(&m));
    const star_param_t *p = star_param(&m, "bb");
    assert_non_null(p);
    assert_int_equal(p->len, 11);
    assert_memory_equal(p->val, "/08ABCDEFGH", 11);
    const char bc_err[] = "C0ZBid0001er05/30bb/00";
    assert_int_equal(star_parse(bc_err, strlen(bc_err), &m), LAB_OK);
    assert_string_equal(m.errors[0].code_text, "Barcode unreadable");

    /* parse_response_params: hex parameter. */
    const char hex[] = "C0QMid1113pqABC";
    unsigned long hv;
    assert_int_equal(star_parse(hex, strlen(hex), &m), LAB_OK);
    assert_int_equal(star_param_hex(&m, "pq", &hv), LAB_OK);
    assert_int_equal(hv, 0xABC);
    const char neg[] = "C0QMid1112aa-21";
    long nv;
    assert_int_equal(star_parse(neg, strlen(neg), &m), LAB_OK);
    assert_int_equal(star_param_int(&m, "aa", &nv), LAB_OK);
    assert_int_equal(nv, -21);
}

static void test_reply_roundtrip(void **state)
{
    char buf[128];
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "AS", 42);
    star_error(&b, 99, 0);
    star_module_error(&b, "P3", 6, 70);
    int n = star_end(&b, 1);
    assert_int_equal(n, (int)strlen("C0ASid0042er99/00 P306/70\r\n"));
    assert_memory_equal(buf, "C0ASid0042er99/00 P306/70\r\n", (size_t)n);
    star_msg_t m;
    assert_int_equal(star_parse(buf, (size_t)n - 2, &m), LAB_OK);
    assert_int_equal(m.n_errors, 2);
    assert_string_equal(m.errors[1].trace_text, "No liquid level found");

    /* Values wider than their field, bad names and tiny buffers are errors, not truncation. */
    star_begin(&b, buf, sizeof buf, "C0", "TP", 1);
    star_int(&b, "tt", 100, 2);
    assert_int_equal(star_end(&b, 0), LAB_ERANGE);
    star_begin(&b, buf, sizeof buf, "C0", "TP", 1);
    star_int(&b, "TT", 1, 2);
    assert_int_equal(star_end(&b, 0), LAB_ERANGE);
    star_begin(&b, buf, 8, "C0", "TP", 1);
    star_int(&b, "tt", 1, 2);
    assert_int_equal(star_end(&b, 0), LAB_ENOSPACE);
    star_begin(&b, buf, sizeof buf, "C0", "TP", 1);
    star_int(&b, "tt", -2147483647L - 1, 12);
    assert_int_equal(star_end(&b, 0), 24);
    assert_string_equal(buf, "C0TPid0001tt-02147483648");
    star_begin(&b, buf, sizeof buf, "C0", "TP", 1);
    star_int(&b, "tt", -1000, 4);
    assert_int_equal(star_end(&b, 0), LAB_ERANGE);
    star_begin(&b, buf, sizeof buf, "C0", "TP", 10000);
    assert_int_equal(star_end(&b, 0), LAB_ERANGE);
}

static void test_pending_out_of_order(void **state)
{
    star_pending_t t;
    star_pending_init(&t);
    int a = star_pending_add(&t, "C0", "TP", (void *)1);
    int c = star_pending_add(&t, "C0", "AS", (void *)2);
    assert_int_equal(a, 1);
    assert_int_equal(c, 2);
    assert_int_equal(star_pending_add_noid(&t, "C0", "RQ", (void *)3), LAB_OK);

    star_msg_t m;
    void *ud;
    /* The second command's reply arrives first. */
    assert_int_equal(star_parse("C0ASid0002er00/00", 17, &m), LAB_OK);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_OK);
    assert_ptr_equal(ud, (void *)2);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_ENOMATCH);
    assert_int_equal(star_parse("C0RQrq0001", 10, &m), LAB_OK);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_OK);
    assert_ptr_equal(ud, (void *)3);
    assert_int_equal(star_parse("C0TPid0001er00/00", 17, &m), LAB_OK);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_OK);
    assert_ptr_equal(ud, (void *)1);
    assert_int_equal(star_pending_count(&t), 0);

    /* Ids count as base.py's _generate_id: (previous + 1) % 10000, so 9999 is followed by 0000;
     * ids still pending are skipped; the table has a bound. */
    t.last_id = 9998;
    assert_int_equal(star_pending_add(&t, "C0", "TP", NULL), 9999);
    assert_int_equal(star_pending_add(&t, "C0", "TP", NULL), 0);
    char buf[16];
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "TP", 0);
    assert_int_equal(star_end(&b, 0), 10);
    assert_memory_equal(buf, "C0TPid0000", 10);
    assert_int_equal(star_pending_add(&t, "C0", "TP", NULL), 1);
    for (int i = 3; i < STAR_PENDING_MAX; i++)
        assert_true(star_pending_add(&t, "C0", "TP", NULL) > 0);
    assert_int_equal(star_pending_add(&t, "C0", "TP", NULL), LAB_EFULL);
}

static void test_garbage(void **state)
{
    star_msg_t m;
    const char *bad[] = {"",        "C0",           "c0QM",          "C0qm",     "C0QMid12",
                         "C0QMidx", "C0QMid1111er", "C0QMid1111er0", "C0QM1234", "C0QMid1111 X"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_true(star_parse(bad[i], strlen(bad[i]), &m) < 0);
    /* The error names the offending byte. */
    assert_int_equal(star_parse("C0QMid1111 X", 12, &m), LAB_ESYNTAX);
    assert_int_equal(m.err_at, 6); /* the id's value, "1111 X" */
    assert_int_equal(star_parse("C0QMid1111erXX", 14, &m), LAB_ESYNTAX);
    assert_int_equal(m.err_at, 12);
    assert_int_equal(star_parse("C0QM1234", 8, &m), LAB_ESYNTAX);
    assert_int_equal(m.err_at, 4);
    long v;
    assert_int_equal(star_parse("C0QMid1111aa12 3", 16, &m), LAB_OK);
    assert_int_equal(star_param_int(&m, "aa", &v), LAB_ESYNTAX);
}

static void test_command_specs(void **state)
{
    /* The documented commands are well formed against their specifications. */
    const char *golden[] = {
        "C0TPid0002xp01179 01179 00000&yp2418 2328 0000&tm1 1 0&tt01tp2244tz2164th2450td0",
        "C0TRid0003xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 0000 2058 1968 "
        "0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1",
        "C0DSid0001dm1 1&tm1 0&xp02983 00000&yp1457 0000&zx1866 1866&lp2000 2000&zl1866 1866&"
        "po0100 0100&ip0000 0000&it0 0&fp0000 0000&zu0032 0032&zr06180 06180&th2450te2450dv01072 "
        "01072&ds1800 1800&ss0050 0050&rv000 000&ta050 050&ba0300 0300&lm0 0&dj00zo000 000&ll1 1&"
        "lv1 1&de0010 0010&wt00 00&mv00000 00000&mc00 00&mp000 000&ms0010 0010&mh0000 0000&"
        "gi000 000&gj0gk0",
    };
    star_msg_t m;
    char which[3];
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        assert_int_equal(star_parse(golden[i], strlen(golden[i]), &m), LAB_OK);
        assert_int_equal(star_check_cmd(&m, 8, which), 0);
    }
    /* What the firmware would refuse: er01/30, /31, /32, /33 (C0 trace table). */
    const char *tp = "C0TPid0002xp01179&yp2418&tm1&tt01tp2244tz2164th2450td0";
    assert_int_equal(star_parse(tp, strlen(tp), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 0);
    const char *unknown_cmd = "C0ZZid0002";
    assert_int_equal(star_parse(unknown_cmd, strlen(unknown_cmd), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 30);
    const char *unknown_param = "C0TPid0002xp01179&yp2418&tm1&tt01tp2244tz2164th2450td0qq1";
    assert_int_equal(star_parse(unknown_param, strlen(unknown_param), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 31);
    assert_string_equal(which, "qq");
    const char *narrow = "C0TPid0002xp1179&yp2418&tm1&tt01tp2244tz2164th2450td0";
    assert_int_equal(star_parse(narrow, strlen(narrow), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 32);
    assert_string_equal(which, "xp");
    assert_int_equal(star_parse(tp, strlen(tp), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 0, which), 32);
    const char *missing = "C0TPid0002xp01179&yp2418&tm1&tt01tp2244tz2164th2450";
    assert_int_equal(star_parse(missing, strlen(missing), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 33);
    assert_string_equal(which, "td");
    assert_string_equal(star_trace_text("C0", 33),
                        "Parameter does not belong to command, or not all parameters were sent");

    /* C0DI built with the field widths of initialize_pipetting_channels passes the check. */
    char buf[256];
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "DI", 7);
    star_list(&b, "xp", (long[]){8000, 8000}, 2, 5, 8);
    star_list(&b, "yp", (long[]){4050, 3960}, 2, 4, 8);
    star_int(&b, "tp", 2450, 4);
    star_int(&b, "tz", 2450, 4);
    star_int(&b, "te", 3600, 4);
    star_list(&b, "tm", (long[]){1, 1}, 2, 1, 8);
    star_int(&b, "tt", 16, 2);
    star_int(&b, "ti", 1, 1);
    int n = star_end(&b, 0);
    assert_true(n > 0);
    assert_string_equal(buf, "C0DIid0007xp08000 08000&yp4050 3960&tp2450tz2450te3600tm1 1&tt16ti1");
    assert_int_equal(star_parse(buf, (size_t)n, &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 0);
}

/* ---- golden frames from PyLabRobot (tests/harness/star_plr.h: STAR_tests.py at 598b58ffb) ---- */

/* One value per parameter for the channels in the pattern (PyLabRobot's inputs in the test:
 * xp/yp are per channel). */
typedef struct plr_in {
    const char *name;
    long v;
} plr_in_t;

/* Builds cmd from the codec's specification with PyLabRobot's channel layout. */
static int plr_build(const char *cmd, int id, unsigned mask, const long *xp, const long *yp,
                     const plr_in_t *in, char *buf, size_t cap)
{
    const star_cmd_spec_t *spec = star_cmd_spec("C0", cmd);
    assert_non_null(spec);
    star_builder_t b;
    star_begin(&b, buf, cap, "C0", cmd, id);
    for (size_t i = 0; i < spec->n; i++) {
        const star_param_spec_t *ps = &spec->params[i];
        long v = 0;
        for (const plr_in_t *p = in; p && p->name; p++)
            if (strcmp(p->name, ps->name) == 0)
                v = p->v;
        if (!ps->list) {
            star_int(&b, ps->name, v, ps->width);
            continue;
        }
        long per[8];
        star_fill_t fill = STAR_FILL_FIRST;
        for (int ch = 0; ch < 8; ch++)
            per[ch] = v;
        if (strcmp(ps->name, "tm") == 0) {
            for (int ch = 0; ch < 8; ch++)
                per[ch] = (mask >> ch) & 1;
            fill = STAR_FILL_ZERO;
        } else if (strcmp(ps->name, "xp") == 0 || strcmp(ps->name, "yp") == 0) {
            memcpy(per, ps->name[0] == 'x' ? xp : yp, sizeof per);
            fill = STAR_FILL_ZERO;
        }
        star_list_pattern(&b, ps->name, per, mask, 8, ps->width, fill);
    }
    return star_end(&b, 0);
}

static void expect_frame(const char *golden, int n, const char *buf)
{
    assert_int_equal(n, (int)strlen(golden));
    assert_memory_equal(buf, golden, (size_t)n);
}

static void test_plr_tip_frames(void **state)
{
    (void)state;
    char buf[2048];
    /* test_tip_pickup_01: C0TT first (the tip type C0TP names), then channels 1 and 2. */
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "TT", 1);
    const star_cmd_spec_t *tt = star_cmd_spec("C0", "TT");
    assert_non_null(tt);
    const long ttv[] = {1, 1, 519, 3600, 2, 0};
    assert_int_equal(tt->n, 6);
    for (size_t i = 0; i < tt->n; i++)
        star_int(&b, tt->params[i].name, ttv[i], tt->params[i].width);
    expect_frame(PLR_TT, star_end(&b, 0), buf);

    const plr_in_t tp[] = {{"tt", 1}, {"tp", 2244}, {"tz", 2164}, {"th", 2450}, {"td", 0}, {0}};
    long xp[8] = {1179, 1179}, yp[8] = {2418, 2328};
    expect_frame(PLR_TP_01, plr_build("TP", 2, 0x03, xp, yp, tp, buf, sizeof buf), buf);
    /* test_tip_pickup_56: channels 5 and 6; the channels before them 0, one 0 after, '&'. */
    long xp56[8] = {0, 0, 0, 0, 1179, 1179}, yp56[8] = {0, 0, 0, 0, 2058, 1968};
    expect_frame(PLR_TP_56, plr_build("TP", 2, 0x30, xp56, yp56, tp, buf, sizeof buf), buf);
    /* test_portrait_tip_rack_handling */
    const plr_in_t tpp[] = {{"tt", 1}, {"tp", 2263}, {"tz", 2163}, {"th", 2450}, {0}};
    long xpp[8] = {1360, 1360, 1360, 1360}, ypp[8] = {1380, 1290, 1200, 1110};
    expect_frame(PLR_TP_PORTRAIT, plr_build("TP", 2, 0x0f, xpp, ypp, tpp, buf, sizeof buf), buf);

    /* C0TR: begin (tp) above end (tz). test_tip_drop_56 back into the rack (ti1) */
    const plr_in_t tr56[] = {{"tp", 2244}, {"tz", 2164}, {"th", 2450},
                             {"te", 2450}, {"ti", 1},    {0}};
    expect_frame(PLR_TR_56, plr_build("TR", 3, 0x30, xp56, yp56, tr56, buf, sizeof buf), buf);
    /* test_discard_tips: all eight into the waste, full lists without '&' */
    const plr_in_t trw[] = {{"tp", 1970}, {"tz", 1870}, {"th", 2450}, {"te", 2450}, {"ti", 0}, {0}};
    long xw[8], yw[8];
    for (int ch = 0; ch < 8; ch++)
        xw[ch] = 8000, yw[ch] = 3427 - 90 * ch;
    expect_frame(PLR_TR_WASTE, plr_build("TR", 3, 0xff, xw, yw, trw, buf, sizeof buf), buf);
    const plr_in_t trp[] = {{"tp", 2263}, {"tz", 2183}, {"th", 2450}, {"te", 2450}, {"ti", 1}, {0}};
    expect_frame(PLR_TR_PORTRAIT, plr_build("TR", 3, 0x0f, xpp, ypp, trp, buf, sizeof buf), buf);

    /* C0DI as initialize_pip sends it: xp one entry, every channel's y and tm. */
    star_begin(&b, buf, sizeof buf, "C0", "DI", 1);
    long ydi[8], ones[8];
    for (int ch = 0; ch < 8; ch++)
        ydi[ch] = 4050 - ch * ((4050 - 2175) / 7), ones[ch] = 1;
    star_list(&b, "xp", (long[]){13400}, 1, 5, 8);
    star_list(&b, "yp", ydi, 8, 4, 8);
    star_int(&b, "tp", 2450, 4);
    star_int(&b, "tz", 1220, 4);
    star_int(&b, "te", 3600, 4);
    star_list(&b, "tm", ones, 8, 1, 8);
    star_int(&b, "tt", 4, 2);
    star_int(&b, "ti", 0, 1);
    expect_frame(PLR_DI, star_end(&b, 0), buf);

    /* Each of them is well formed for the simulator's check. */
    const char *all[] = {PLR_TT,       PLR_TP_01,       PLR_TP_56, PLR_TP_PORTRAIT, PLR_TR_56,
                         PLR_TR_WASTE, PLR_TR_PORTRAIT, PLR_DI,    PLR_AS_1,        PLR_AS_2,
                         PLR_AS_56,    PLR_DS_1,        PLR_DS_2};
    static star_msg_t m;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char which[3];
        assert_int_equal(star_parse(all[i], strlen(all[i]), &m), LAB_OK);
        assert_int_equal(star_check_cmd(&m, 8, which), 0);
    }
    /* discard_tip writes tp..te unpadded: a 3-digit height is still well formed */
    const char short_tr[] = "C0TRid0003xp08000&yp3427&tm1&tp970tz870th2450te2450ti0";
    char which[3];
    assert_int_equal(star_parse(short_tr, strlen(short_tr), &m), LAB_OK);
    assert_int_equal(star_check_cmd(&m, 8, which), 0);
}

static const plr_in_t plr_as[] = {
    {"th", 2450}, {"te", 2450}, {"lp", 2000}, {"zl", 1866}, {"po", 100}, {"zu", 32}, {"zr", 6180},
    {"zx", 1866}, {"av", 1072}, {"as", 1000}, {"ll", 1},    {"lv", 1},   {"de", 20}, {"wt", 10},
    {"ms", 1000}, {"sd", 500},  {"se", 500},  {"sz", 300},  {0},
};
static const plr_in_t plr_ds[] = {
    {"dm", 1},    {"zx", 1866}, {"lp", 2000}, {"zl", 1866}, {"po", 100}, {"zu", 32}, {"zr", 6180},
    {"th", 2450}, {"te", 2450}, {"dv", 1072}, {"ds", 1800}, {"ss", 50},  {"ta", 50}, {"ba", 300},
    {"ll", 1},    {"lv", 1},    {"de", 10},   {"ms", 10},   {0},
};

static void test_plr_liquid_frames(void **state)
{
    (void)state;
    char buf[4096];
    long xp[8] = {2983, 2983}, yp[8] = {1457, 1367};
    /* test_single_channel_aspiration / test_multi_channel_aspiration: the lists of the
     * parameters other than tm, xp, yp repeat the first channel's value where tm is 0. */
    expect_frame(PLR_AS_1, plr_build("AS", 1, 0x01, xp, yp, plr_as, buf, sizeof buf), buf);
    expect_frame(PLR_AS_2, plr_build("AS", 1, 0x03, xp, yp, plr_as, buf, sizeof buf), buf);
    long xp56[8] = {0, 0, 0, 0, 2983, 2983}, yp56[8] = {0, 0, 0, 0, 1457, 1367};
    expect_frame(PLR_AS_56, plr_build("AS", 3, 0x30, xp56, yp56, plr_as, buf, sizeof buf), buf);
    expect_frame(PLR_DS_1, plr_build("DS", 1, 0x01, xp, yp, plr_ds, buf, sizeof buf), buf);
    expect_frame(PLR_DS_2, plr_build("DS", 1, 0x03, xp, yp, plr_ds, buf, sizeof buf), buf);

    /* The layout itself: 8 of 8 channels has no '&' and no extra entry; a pattern ending at the
     * last channel neither. */
    assert_int_equal(star_pattern_len(0x01, 8), 2);
    assert_int_equal(star_pattern_len(0x30, 8), 7);
    assert_int_equal(star_pattern_len(0xff, 8), 8);
    assert_int_equal(star_pattern_len(0x80, 8), 8);
    assert_int_equal(star_pattern_len(0, 8), 0);
    star_builder_t b;
    star_begin(&b, buf, sizeof buf, "C0", "AS", 1);
    star_list_pattern(&b, "tm", (long[8]){0}, 0, 8, 1, STAR_FILL_ZERO);
    assert_int_equal(star_end(&b, 0), LAB_ERANGE); /* no channel: not a command */
}

/* The replies check_fw_string_error accepts are accepted; those it raises on report the same
 * modules with the same codes; a string without a firmware reply's shape is not one. */
static void test_plr_replies(void **state)
{
    (void)state;
    static star_msg_t m;
    const struct {
        const char *s;
        int id;
    } ok[] = {{PLR_OK_QM, 1111}, {PLR_OK_QM_ER, 1111}, {PLR_OK_QM_P1, 1111},
              {PLR_OK_ZB, 1},    {PLR_OK_RY, 52},      {PLR_OK_TR, 3}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(star_parse(ok[i].s, strlen(ok[i].s), &m), LAB_OK);
        assert_int_equal(m.id, ok[i].id);
        assert_false(star_msg_failed(&m));
    }
    long kz[8];
    size_t n;
    assert_int_equal(star_param_list(&m, "kz", kz, 8, &n), LAB_OK);
    assert_int_equal(n, 8);

    assert_int_equal(star_parse(PLR_ERR_MASTER, strlen(PLR_ERR_MASTER), &m), LAB_OK);
    assert_true(star_msg_failed(&m));
    assert_int_equal(m.n_errors, 1);
    assert_string_equal(m.errors[0].module, "C0");
    assert_int_equal(m.errors[0].code, 1);
    assert_string_equal(m.errors[0].module_name, "Master");
    assert_string_equal(m.errors[0].code_text, "Command syntax error");
    assert_string_equal(m.errors[0].trace_text, "Unknown command");

    /* er99/00 (slave error) then P2 35/00, P4 02/98, PG 08/76; P1 00/00 is no error. */
    assert_int_equal(star_parse(PLR_ERR_SLAVES, strlen(PLR_ERR_SLAVES), &m), LAB_OK);
    assert_true(star_msg_failed(&m));
    assert_int_equal(m.n_errors, 4);
    assert_int_equal(m.errors[0].code, 99);
    const char *mods[] = {"P2", "P4", "PG"};
    const int codes[] = {35, 2, 8}, traces[] = {0, 98, 76};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(m.errors[i + 1].module, mods[i]);
        assert_int_equal(m.errors[i + 1].code, codes[i]);
        assert_int_equal(m.errors[i + 1].trace, traces[i]);
    }
    assert_string_equal(m.errors[3].module_name, "Pipetting channel 16");
    assert_string_equal(m.errors[3].trace_text, "Tip already picked up");
    assert_null(m.errors[2].trace_text); /* "Unknown trace information code 98" */

    /* Slave modules in their own form: er## is the trace information. */
    assert_int_equal(star_parse(PLR_ERR_P1, strlen(PLR_ERR_P1), &m), LAB_OK);
    assert_true(star_msg_failed(&m));
    assert_int_equal(m.n_errors, 1);
    assert_string_equal(m.errors[0].module, "P1");
    assert_int_equal(m.errors[0].code, -1);
    assert_int_equal(m.errors[0].trace, 30);
    assert_string_equal(m.errors[0].trace_text, "Unknown command");
    assert_int_equal(star_parse(PLR_ERR_H0, strlen(PLR_ERR_H0), &m), LAB_OK);
    assert_true(star_msg_failed(&m));
    assert_string_equal(m.errors[0].module, "H0");
    assert_int_equal(m.errors[0].trace, 32);
    assert_string_equal(m.errors[0].module_name, "CoRe 96 Head");
    assert_int_equal(star_parse(PLR_ERR_ZB, strlen(PLR_ERR_ZB), &m), LAB_OK);
    assert_true(star_msg_failed(&m));
    assert_int_equal(m.errors[0].code, 5);

    assert_int_not_equal(star_parse(PLR_PLAINTEXT, strlen(PLR_PLAINTEXT), &m), LAB_OK);
    /* The master writes er##/##; a bare er## in its reply is refused (base.py would miss it). */
    assert_int_equal(star_parse("C0QMid0001er30", 14, &m), LAB_ESYNTAX);
    /* test_send_command_wrong_id: a reply with another id answers nothing pending. */
    star_pending_t t;
    star_pending_init(&t);
    assert_int_equal(star_pending_add(&t, "C0", "QM", NULL), 1);
    void *ud;
    assert_int_equal(star_parse("C0QMid0002", 10, &m), LAB_OK);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_ENOMATCH);
    assert_int_equal(star_parse("C0QMid0001", 10, &m), LAB_OK);
    assert_int_equal(star_pending_take(&t, &m, &ud), LAB_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plr_tip_frames),
        cmocka_unit_test(test_plr_liquid_frames),
        cmocka_unit_test(test_plr_replies),
        cmocka_unit_test(test_tip_pickup_command),
        cmocka_unit_test(test_aspirate_and_drop_commands_parse),
        cmocka_unit_test(test_reply_errors),
        cmocka_unit_test(test_reply_roundtrip),
        cmocka_unit_test(test_pending_out_of_order),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_command_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
