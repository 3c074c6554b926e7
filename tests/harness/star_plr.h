/* Hamilton STAR firmware strings copied from PyLabRobot, the independent evidence the STAR codec,
 * driver and simulator are tested against. Repository PyLabRobot/pylabrobot, commit 598b58ffb,
 * file pylabrobot/legacy/liquid_handling/backends/hamilton/STAR_tests.py unless said otherwise;
 * each string names the test it comes from. PyLabRobot's test deck has 8 channels. */
#ifndef LAB_TESTS_STAR_PLR_H
#define LAB_TESTS_STAR_PLR_H

/* test_tip_pickup_01 (also test_tip_pickup_56, test_core_96_tip_pickup): the 300 uL filter tip
 * defined at index 1 before the first command that names tt. */
#define PLR_TT "C0TTid0001tt01tf1tl0519tv03600tg2tu0"
/* test_tip_pickup_01: channels 1 and 2. */
#define PLR_TP_01 "C0TPid0002xp01179 01179 00000&yp2418 2328 0000&tm1 1 0&tt01tp2244tz2164th2450td0"
/* test_tip_pickup_56: channels 5 and 6. */
#define PLR_TP_56                                                                                  \
    "C0TPid0002xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 0000 2058 1968 "       \
    "0000&tm0 0 0 0 1 1 0&tt01tp2244tz2164th2450td0"
/* test_portrait_tip_rack_handling: four channels. */
#define PLR_TP_PORTRAIT                                                                            \
    "C0TPid0002xp01360 01360 01360 01360 00000&yp1380 1290 1200 1110 0000&tm1 1 1 1 0&tt01tp2263"  \
    "tz2163th2450td0"
/* test_tip_drop_56: back into the rack (ti1). */
#define PLR_TR_56                                                                                  \
    "C0TRid0003xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 0000 2058 1968 "       \
    "0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1"
/* test_discard_tips: eight channels into the waste (ti0); every list full, no '&'. */
#define PLR_TR_WASTE                                                                               \
    "C0TRid0003xp08000 08000 08000 08000 08000 08000 08000 08000yp3427 3337 3247 3157 3067 2977 "  \
    "2887 2797tm1 1 1 1 1 1 1 1tp1970tz1870th2450te2450ti0"
/* test_portrait_tip_rack_handling. */
#define PLR_TR_PORTRAIT                                                                            \
    "C0TRid0003xp01360 01360 01360 01360 00000&yp1380 1290 1200 1110 0000&tm1 1 1 1 0&tp2263"      \
    "tz2183th2450te2450ti1"
/* test_single_channel_aspiration. */
#define PLR_AS_1                                                                                   \
    "C0ASid0001at0 0&tm1 0&xp02983 00000&yp1457 0000&th2450te2450lp2000 2000&ch000 000&zl1866 "    \
    "1866&po0100 0100&zu0032 0032&zr06180 06180&zx1866 1866&ip0000 0000&it0 0&fp0000 0000&"        \
    "av01072 01072&as1000 1000&ta000 000&ba0000 0000&oa000 000&lm0 0&ll1 1&lv1 1&zo000 000&"       \
    "ld00 00&de0020 0020&wt10 10&mv00000 00000&mc00 00&mp000 000&ms1000 1000&mh0000 0000&"         \
    "gi000 000&gj0gk0lk0 0&ik0000 0000&sd0500 0500&se0500 0500&sz0300 0300&io0000 0000&"
/* test_multi_channel_aspiration. */
#define PLR_AS_2                                                                                   \
    "C0ASid0001at0 0 0&tm1 1 0&xp02983 02983 00000&yp1457 1367 0000&th2450te2450lp2000 2000 "      \
    "2000&ch000 000 000&zl1866 1866 1866&po0100 0100 0100&zu0032 0032 0032&zr06180 06180 06180&"   \
    "zx1866 1866 1866&ip0000 0000 0000&it0 0 0&fp0000 0000 0000&av01072 01072 01072&as1000 1000 "  \
    "1000&ta000 000 000&ba0000 0000 0000&oa000 000 000&lm0 0 0&ll1 1 1&lv1 1 1&zo000 000 000&"     \
    "ld00 00 00&de0020 0020 0020&wt10 10 10&mv00000 00000 00000&mc00 00 00&mp000 000 000&"         \
    "ms1000 1000 1000&mh0000 0000 0000&gi000 000 000&gj0gk0lk0 0 0&ik0000 0000 0000&sd0500 0500 "  \
    "0500&se0500 0500 0500&sz0300 0300 0300&io0000 0000 0000&"
/* test_aspirate56: channels 5 and 6 only; at (first list) of 7 entries. */
#define PLR_AS_56                                                                                  \
    "C0ASid0003at0 0 0 0 0 0 0&tm0 0 0 0 1 1 0&xp00000 00000 00000 00000 02983 02983 00000&"       \
    "yp0000 0000 0000 0000 1457 1367 0000&th2450te2450lp2000 2000 2000 2000 2000 2000 2000&"       \
    "ch000 000 000 000 000 000 000&zl1866 1866 1866 1866 1866 1866 1866&po0100 0100 0100 0100 "    \
    "0100 0100 0100&zu0032 0032 0032 0032 0032 0032 0032&zr06180 06180 06180 06180 06180 06180 "   \
    "06180&zx1866 1866 1866 1866 1866 1866 1866&ip0000 0000 0000 0000 0000 0000 0000&it0 0 0 0 "   \
    "0 0 0&fp0000 0000 0000 0000 0000 0000 0000&av01072 01072 01072 01072 01072 01072 01072&"      \
    "as1000 1000 1000 1000 1000 1000 1000&ta000 000 000 000 000 000 000&ba0000 0000 0000 0000 "    \
    "0000 0000 0000&oa000 000 000 000 000 000 000&lm0 0 0 0 0 0 0&ll1 1 1 1 1 1 1&lv1 1 1 1 1 1 "  \
    "1&zo000 000 000 000 000 000 000&ld00 00 00 00 00 00 00&de0020 0020 0020 0020 0020 0020 "      \
    "0020&wt10 10 10 10 10 10 10&mv00000 00000 00000 00000 00000 00000 00000&mc00 00 00 00 00 "    \
    "00 00&mp000 000 000 000 000 000 000&ms1000 1000 1000 1000 1000 1000 1000&mh0000 0000 0000 "   \
    "0000 0000 0000 0000&gi000 000 000 000 000 000 000&gj0gk0lk0 0 0 0 0 0 0&ik0000 0000 0000 "    \
    "0000 0000 0000 0000&sd0500 0500 0500 0500 0500 0500 0500&se0500 0500 0500 0500 0500 0500 "    \
    "0500&sz0300 0300 0300 0300 0300 0300 0300&io0000 0000 0000 0000 0000 0000 0000&"
/* test_single_channel_dispense (jet, blow out: dm1). */
#define PLR_DS_1                                                                                   \
    "C0DSid0001dm1 1&tm1 0&xp02983 00000&yp1457 0000&zx1866 1866&lp2000 2000&zl1866 1866&po0100 "  \
    "0100&ip0000 0000&it0 0&fp0000 0000&zu0032 0032&zr06180 06180&th2450te2450dv01072 01072&"      \
    "ds1800 1800&ss0050 0050&rv000 000&ta050 050&ba0300 0300&lm0 0&dj00zo000 000&ll1 1&lv1 1&"     \
    "de0010 0010&wt00 00&mv00000 00000&mc00 00&mp000 000&ms0010 0010&mh0000 0000&gi000 000&gj0gk0"
/* test_multi_channel_dispense. */
#define PLR_DS_2                                                                                   \
    "C0DSid0001dm1 1 1&tm1 1 0&xp02983 02983 00000&yp1457 1367 0000&zx1866 1866 1866&lp2000 "      \
    "2000 2000&zl1866 1866 1866&po0100 0100 0100&ip0000 0000 0000&it0 0 0&fp0000 0000 0000&"       \
    "zu0032 0032 0032&zr06180 06180 06180&th2450te2450dv01072 01072 01072&ds1800 1800 1800&"       \
    "ss0050 0050 0050&rv000 000 000&ta050 050 050&ba0300 0300 0300&lm0 0 0&dj00zo000 000 000&"     \
    "ll1 1 1&lv1 1 1&de0010 0010 0010&wt00 00 00&mv00000 00000 00000&mc00 00 00&mp000 000 000&"    \
    "ms0010 0010 0010&mh0000 0000 0000&gi000 000 000&gj0gk0"

/* Not in STAR_tests.py: C0DI as STAR_backend.py initialize_pip (lines 6404-6420) sends it
 * through initialize_pipetting_channels (6422-6481) and base.py _assemble_command, for 8 channels
 * and PyLabRobot's default configuration: x the tip waste (tip_waste_x_position 1340.0 mm, line
 * 1371), y 4050 - i * ((4050 - 2175) // 7), tp its channel traversal height 245 mm (line 1701),
 * tz 1220, te 3600, every channel, tt 4, ti 0; xp is a one-entry list, so '&' follows it. This
 * string is what base.py's own _assemble_command (run from that commit) returns for them. */
#define PLR_DI                                                                                     \
    "C0DIid0001xp13400&yp4050 3783 3516 3249 2982 2715 2448 2181tp2450tz1220te3600"                \
    "tm1 1 1 1 1 1 1 1tt04ti0"

/* Replies. Accepted (no error) by check_fw_string_error, or parsed by parse_star_fw_string. */
#define PLR_OK_QM "C0QMid1111"                     /* test_parse_response_no_errors */
#define PLR_OK_QM_ER "C0QMid1111 er00/00"          /* test_parse_response_no_errors */
#define PLR_OK_QM_P1 "C0QMid1111 er00/00 P100/00"  /* test_parse_response_no_errors */
#define PLR_OK_ZB "C0ZBid0001er00/00bb/08ABCDEFGH" /* test_core_read_barcode_success */
#define PLR_OK_RY "C0RYid0052er00/00ry+1530 +1399 +1297 +1196 +1095 +0994 +0892 +0755"
/* test_tip_drop_56: the C0TR reply the test feeds back, without an er field. */
#define PLR_OK_TR "C0TRid0003kz000 000 000 000 000 000 000 000vz000 000 000 000 000 000 000 000"
/* Refused: an error. test_parse_response_master_error (Master, "Unknown command"). */
#define PLR_ERR_MASTER "C0QMid1111 er01/30"
/* test_parse_response_slave_errors: channels 2, 4 and 16 (P1 00/00 is no error). */
#define PLR_ERR_SLAVES "C0QMid1111 er99/00 P100/00 P235/00 P402/98 PG08/76"
/* test_parse_slave_response_errors: a slave module's own form, er## ("Unknown command"). */
#define PLR_ERR_P1 "P1OQid1111er30"
/* test_head96_probe_z_using_clld_retracts_on_firmware_error: the CoRe 96 head's own form. */
#define PLR_ERR_H0 "H0ZLid0001er32"
/* test_core_read_barcode_nonzero_error_code_raises_firmware_error. */
#define PLR_ERR_ZB "C0ZBid0001er05/30bb/00"
/* test_send_command_plaintext_response: no firmware reply at all. */
#define PLR_PLAINTEXT "this is plaintext"

#endif
