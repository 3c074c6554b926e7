/* The tokens file: parsing, roles, refused lines with their line numbers, and lookups that
 * compare in constant time against every token. */
#include "daemon/api/auth.h"
#include "core/chain.h"
#include "core/err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int parse(const char *text, lab_tokens_t *t, char *err, size_t errlen)
{
    return lab_tokens_parse(text, strlen(text), "tokens", t, err, errlen);
}

static void test_roles(void **state)
{
    assert_int_equal(lab_role_parse("viewer"), LAB_ROLE_VIEWER);
    assert_int_equal(lab_role_parse("technician"), LAB_ROLE_TECHNICIAN);
    assert_int_equal(lab_role_parse("pipeline"), LAB_ROLE_PIPELINE);
    assert_int_equal(lab_role_parse("admin"), LAB_ROLE_ADMIN);
    assert_int_equal(lab_role_parse("Admin"), -1);
    assert_int_equal(lab_role_parse("root"), -1);
    assert_string_equal(lab_role_name(LAB_ROLE_TECHNICIAN), "technician");
}

static void test_parse_good(void **state)
{
    const char *text = "# labloop tokens\n"
                       "\n"
                       "viewer-token-1 viewer alice\n"
                       "   tech-token-22\ttechnician  bob   # the night shift\n"
                       "pipe-token-333 pipeline\n"
                       "admin-token-4444 admin root\r\n"
                       "# trailing comment";
    lab_tokens_t t;
    char err[256] = "";
    assert_int_equal(parse(text, &t, err, sizeof err), 0);
    assert_int_equal(t.n, 4);

    const lab_token_t *k = lab_tokens_find(&t, "tech-token-22", 13);
    assert_non_null(k);
    assert_int_equal(k->role, LAB_ROLE_TECHNICIAN);
    assert_string_equal(k->name, "bob");
    k = lab_tokens_find(&t, "admin-token-4444", 16);
    assert_non_null(k);
    assert_string_equal(k->name, "root");
    /* No NAME: the role's name stands in. */
    k = lab_tokens_find(&t, "pipe-token-333", 14);
    assert_non_null(k);
    assert_int_equal(k->role, LAB_ROLE_PIPELINE);
    assert_string_equal(k->name, "pipeline");
    assert_false(k->named); /* it may not sign a decision */
    assert_true(lab_tokens_find(&t, "tech-token-22", 13)->named);
    /* Prefixes, extensions and case changes of a token are other tokens. */
    assert_null(lab_tokens_find(&t, "tech-token-2", 12));
    assert_null(lab_tokens_find(&t, "tech-token-222", 14));
    assert_null(lab_tokens_find(&t, "TECH-TOKEN-22", 13));
    assert_null(lab_tokens_find(&t, "", 0));
    lab_tokens_free(&t);
    assert_int_equal(t.n, 0);
}

static void test_empty_file(void **state)
{
    lab_tokens_t t;
    char err[256];
    assert_int_equal(parse("", &t, err, sizeof err), 0);
    assert_int_equal(t.n, 0);
    assert_null(lab_tokens_find(&t, "anything-at-all", 15));
    assert_int_equal(parse("# only comments\n\n   \n", &t, err, sizeof err), 0);
    assert_int_equal(t.n, 0);
    lab_tokens_free(&t);
}

/* Each bad file is refused whole, with the line of the first bad line and why. */
static void test_parse_bad_lines(void **state)
{
    static const struct {
        const char *text;
        const char *want; /* a part of the message */
    } cases[] = {
        {"good-token-1 viewer\nlonely-token\n", "tokens:2: expected TOKEN ROLE [NAME], the role"},
        {"good-token-1 viewer\n# c\nbad-token-2 superuser x\n",
         "tokens:3: unknown role \"superuser\""},
        {"good-token-1 viewer a b\n", "tokens:1: expected TOKEN ROLE [NAME], found more fields"},
        {"\n\n\nshort viewer\n", "tokens:4: token shorter than 8"},
        {"same-token-1 viewer\nsame-token-1 admin al\n", "tokens:2: the same token appears"},
        /* Technicians and admins sign decisions: their tokens name a person. */
        {"good-token-1 pipeline\ntech-token-2 technician\n",
         "tokens:2: technician tokens must name their person (TOKEN technician NAME)"},
        {"good-token-1 viewer\nadmin-token-2 admin # root\n",
         "tokens:2: admin tokens must name their person"},
        {"ok-token-111 viewer\nok-token-222 VIEWER\n", "tokens:2: unknown role \"VIEWER\""},
        {"long-name-11 viewer "
         "n12345678901234567890123456789012345678901234567890123456789012345\n",
         "tokens:1: name longer than 64"},
        {"long-name-11 viewer "
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
         "\xC3\xA9\xC3\xA9\n",
         "tokens:1: name longer than 64 characters"},
        {"bad-name-111 viewer ab\xFF\n", "tokens:1: the name is not UTF-8 text"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lab_tokens_t t = {(lab_token_t *)1, 99};
        char err[256] = "";
        assert_int_equal(parse(cases[i].text, &t, err, sizeof err), LAB_ECONFIG);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].want);
        assert_int_equal(t.n, 0);
        assert_null(t.v);
    }
}

/* A name of 64 characters, each of four bytes, is kept whole. */
static void test_longest_name(void **state)
{
    (void)state;
    char text[400] = "emoji-token-1 technician ";
    for (int i = 0; i < LAB_TOKEN_NAME_MAX; i++)
        strcat(text, "\xF0\x9F\x98\x80");
    lab_tokens_t t;
    char err[256] = "";
    assert_int_equal(parse(text, &t, err, sizeof err), LAB_OK);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.v[0].name, strchr(strchr(text, ' ') + 1, ' ') + 1);
    assert_int_equal(strlen(t.v[0].name), 4 * LAB_TOKEN_NAME_MAX);
    lab_tokens_free(&t);
}

static void test_nul_byte(void **state)
{
    static const char text[] = "good-token-1 viewer\nbad\0token admin al\n";
    lab_tokens_t t;
    char err[256] = "";
    assert_int_equal(lab_tokens_parse(text, sizeof text - 1, "f", &t, err, sizeof err),
                     LAB_ECONFIG);
    assert_non_null(strstr(err, "f:2:"));
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/labloop-tokens-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "file-token-1 admin ops\nfile-token-2 viewer\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    lab_tokens_t t;
    char err[512] = "";
    assert_int_equal(lab_tokens_load(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n, 2);
    lab_tokens_free(&t);

    FILE *f = fopen(path, "w");
    fputs("file-token-1 admin al\nfile-token-2 wizard\n", f);
    fclose(f);
    assert_int_equal(lab_tokens_load(path, &t, err, sizeof err), LAB_ECONFIG);
    char want[600];
    snprintf(want, sizeof want, "%s:2: unknown role", path);
    assert_non_null(strstr(err, want));
    unlink(path);

    assert_int_equal(lab_tokens_load(path, &t, err, sizeof err), LAB_ECONFIG);
    assert_non_null(strstr(err, "cannot open"));
}

/* Every lookup runs lab_ct_equal once per token, matched or not, first or last. */
static void test_constant_time_lookup(void **state)
{
    const char *text =
        "first-token-1 viewer\nmiddle-token-2 technician tim\nlast-token-3 admin al\n";
    lab_tokens_t t;
    char err[256];
    assert_int_equal(parse(text, &t, err, sizeof err), 0);
    const char *probes[] = {"first-token-1", "last-token-3", "no-such-token", "x"};
    for (size_t i = 0; i < 4; i++) {
        unsigned long before = lab_ct_compares;
        lab_tokens_find(&t, probes[i], strlen(probes[i]));
        assert_int_equal(lab_ct_compares - before, 3);
    }
    lab_tokens_free(&t);

    assert_true(lab_ct_equal("abcdef", "abcdef", 6));
    assert_false(lab_ct_equal("abcdef", "abcdeg", 6));
    assert_false(lab_ct_equal("xbcdef", "abcdef", 6));
    assert_true(lab_ct_equal("", "", 0));
}

/* Tokens are kept as their SHA-256 digests (FIPS 180-4 test vectors): a token file written for the
 * hand-written digest matches the same entries with OpenSSL's. */
static void test_sha256(void **state)
{
    static const struct {
        const char *in;
        const char *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    for (size_t i = 0; i < 3; i++) {
        lab_chain_digest_hex(v[i].in, strlen(v[i].in), hex);
        assert_string_equal(hex, v[i].hex);
    }
    /* The stored digest of a token is the vector's. */
    const char *text = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq admin Ada\n";
    lab_tokens_t t;
    char err[256];
    assert_int_equal(lab_tokens_parse(text, strlen(text), "t", &t, err, sizeof err), 0);
    lab_chain_hex(t.v[0].digest, hex);
    assert_string_equal(hex, v[2].hex);
    assert_non_null(
        lab_tokens_find(&t, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56));
    lab_tokens_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles),        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_empty_file),   cmocka_unit_test(test_parse_bad_lines),
        cmocka_unit_test(test_longest_name), cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_load_file),    cmocka_unit_test(test_constant_time_lookup),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
