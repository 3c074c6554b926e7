/* Hamilton STAR firmware codec, error tables and pending-reply table. Sources in star.h. */
#include "protocols/star.h"

#include <ctype.h>
#include <string.h>

typedef struct num_text {
    int n;
    const char *text;
} num_text_t;

static const struct {
    const char *id, *name;
} modules[] = {
    {"C0", "Master"},
    {"X0", "X-drives"},
    {"I0", "Auto Load"},
    {"W1", "Wash station 1-3"},
    {"W2", "Wash station 4-6"},
    {"T1", "Temperature carrier 1"},
    {"T2", "Temperature carrier 2"},
    {"R0", "iSWAP"},
    {"P1", "Pipetting channel 1"},
    {"P2", "Pipetting channel 2"},
    {"P3", "Pipetting channel 3"},
    {"P4", "Pipetting channel 4"},
    {"P5", "Pipetting channel 5"},
    {"P6", "Pipetting channel 6"},
    {"P7", "Pipetting channel 7"},
    {"P8", "Pipetting channel 8"},
    {"P9", "Pipetting channel 9"},
    {"PA", "Pipetting channel 10"},
    {"PB", "Pipetting channel 11"},
    {"PC", "Pipetting channel 12"},
    {"PD", "Pipetting channel 13"},
    {"PE", "Pipetting channel 14"},
    {"PF", "Pipetting channel 15"},
    {"PG", "Pipetting channel 16"},
    {"H0", "CoRe 96 Head"},
    {"HW", "Pump station 1"},
    {"HU", "Pump station 2"},
    {"HV", "Pump station 3"},
    {"N0", "Nano dispenser"},
    {"D0", "384 dispensing head"},
    {"NP", "Nano dispenser pressure controller"},
    {"M1", "Reserved for module 1"},
};

static const num_text_t master_codes[] = {
    {1, "Command syntax error"},
    {2, "Hardware error"},
    {3, "Command not completed"},
    {4, "Clot detected"},
    {5, "Barcode unreadable"},
    {6, "Too little liquid"},
    {7, "Tip already fitted"},
    {8, "No tips"},
    {9, "No carrier"},
    {10, "Not completed"},
    {11, "Dispense with pressure LLD"},
    {12, "No teach-in signal"},
    {13, "Loading tray error"},
    {14, "Sequenced aspiration with pressure LLD"},
    {15, "Not allowed parameter combination"},
    {16, "Cover close error"},
    {17, "Aspiration error"},
    {18, "Wash fluid or trash error"},
    {19, "Incubation error"},
    {20, "TADM measurement error"},
    {21, "No element"},
    {22, "Element still holding"},
    {23, "Element lost"},
    {24, "Illegal target plate position"},
    {25, "Illegal user access"},
    {26, "TADM measurement error"},
    {27, "Position not reachable"},
    {28, "Unexpected LLD"},
    {29, "Area already occupied"},
    {30, "Impossible to occupy area"},
    {31, "Anti drop controlling out of tolerance"},
    {32, "Decapper lock error while screw / unscrew a cap by twister channels"},
    {33, "Decapper station error while lock / unlock a cap"},
    {99, "Slave error"},
    {100, "Wrong carrier barcode detected"},
    {101, "Carrier barcode could not be read or is missing"},
    {102, "Liquid surface not detected"},
    {103, "Carrier not detected at deck end position"},
    {104, "Dispense volume exceeds the aspirated volume"},
    {105, "The dispensed volume is out of tolerance"},
    {106, "The labware to be loaded was not detected by autoload module"},
    {107, "The labware contains unexpected barcode"},
    {108, "The labware to be reloaded contains wrong barcode"},
    {109, "The barcode read doesn't match the barcode mask defined"},
    {110, "The barcode read is not unique"},
    {111, "The barcode read is already loaded as unique barcode"},
    {112, "Kit Lot expired"},
    {113, "Barcode contains character which is used as delimiter in result string"},
    {0, NULL},
};

static const num_text_t trace_master[] = {
    {10, "CAN error"},
    {11, "Slave command time out"},
    {20, "E2PROM error"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {33, "Parameter does not belong to command, or not all parameters were sent"},
    {34, "Node name unknown"},
    {35, "id parameter error"},
    {37, "node name defined twice"},
    {38, "faulty XL channel settings"},
    {39, "faulty robotic channel settings"},
    {40, "PIP task busy"},
    {41, "Auto load task busy"},
    {42, "Miscellaneous task busy"},
    {43, "Incubator task busy"},
    {44, "Washer task busy"},
    {45, "iSWAP task busy"},
    {46, "CoRe 96 head task busy"},
    {47, "Carrier sensor doesn't work properly"},
    {48, "CoRe 384 head task busy"},
    {49, "Nano pipettor task busy"},
    {50, "XL channel task busy"},
    {51, "Tube gripper task busy"},
    {52, "Imaging channel task busy"},
    {53, "Robotic channel task busy"},
    {-1, NULL},
};

static const num_text_t trace_autoload[] = {
    {0, "No error"},
    {20, "No communication to EEPROM"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {35, "Voltages outside permitted range"},
    {36, "Stop during execution of command (hood open)"},
    {40, "No parallel processes permitted"},
    {50, "Scanner X-drive: init position not found"},
    {51, "Scanner X-drive: stepper motor not initialized"},
    {52, "Scanner X-drive: movement error (step loss)"},
    {55, "Scanner rotation drive: drive blocked"},
    {60, "Carrier Y-drive: init position not found"},
    {61, "Carrier Y-drive: stepper motor not initialized"},
    {62, "Carrier Y-drive: movement error (step loss)"},
    {65, "Carrier Z-drive: init position not found"},
    {66, "Carrier Z-drive: stepper motor not initialized"},
    {67, "Carrier Z-drive: movement error (step loss)"},
    {70, "Barcode scanner: communication error"},
    {75, "Loading indicator (LED): communication error"},
    {80, "Identification barcode not readable"},
    {81, "No carrier present"},
    {82, "No carrier loaded"},
    {83, "Loading tray is occupied"},
    {84, "Data for free definable carrier not correct"},
    {-1, NULL},
};

static const num_text_t trace_pip[] = {
    {0, "No error"},
    {20, "No communication to EEPROM"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {35, "Voltages outside permitted range"},
    {36, "Stop during execution of command"},
    {37, "Stop during execution of command"},
    {40, "No parallel processes permitted"},
    {50, "Dispensing drive init. position not found"},
    {51, "Dispensing drive not initialized"},
    {52, "Dispensing drive movement error"},
    {53, "Maximum volume in tip reached"},
    {54, "Position outside of permitted area"},
    {55, "Y-drive blocked"},
    {56, "Y-drive not initialized"},
    {57, "Y-drive movement error"},
    {60, "Z-drive blocked"},
    {61, "Z-drive not initialized"},
    {62, "Z-drive movement error"},
    {63, "Z-drive limit stop not found"},
    {65, "Squeezer drive blocked"},
    {66, "Squeezer drive not initialized"},
    {67, "Squeezer drive movement error: step loss"},
    {68, "Init position adjustment error"},
    {70, "No liquid level found"},
    {71, "Not enough liquid present"},
    {72, "Auto calibration at pressure (sensor not possible)"},
    {73, "No liquid level found with dual LLD"},
    {74, "Liquid at a not allowed position detected"},
    {75, "No tip picked up"},
    {76, "Tip already picked up"},
    {77, "Tip not dropped"},
    {78, "Wrong tip picked up"},
    {80, "Liquid not correctly aspirated"},
    {81, "Clot detected"},
    {82, "TADM measurement out of lower limit curve"},
    {83, "TADM measurement out of upper limit curve"},
    {84, "Not enough memory for TADM measurement"},
    {85, "No communication to digital potentiometer"},
    {86, "ADC algorithm error"},
    {87, "2nd phase of liquid not found"},
    {88, "Not enough liquid present"},
    {90, "Limit curve not resettable"},
    {91, "Limit curve not programmable"},
    {92, "Limit curve not found"},
    {93, "Limit curve data incorrect"},
    {94, "Not enough memory for limit curve"},
    {95, "Invalid limit curve index"},
    {96, "Limit curve already stored"},
    {-1, NULL},
};

static const num_text_t trace_head96[] = {
    {0, "No error"},
    {20, "No communication to EEPROM"},
    {21, "No communication to digital potentiometer"},
    {25, "Flash EPROM data incorrect"},
    {26, "Flash EPROM cannot be programmed"},
    {27, "Flash EPROM cannot be erased"},
    {28, "Flash EPROM checksum error"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {35, "Voltage outside permitted range"},
    {36, "Stop during execution of command"},
    {37, "The adjustment sensor did not switch"},
    {40, "No parallel processes permitted"},
    {50, "Dispensing drive initialization failed"},
    {51, "Dispensing drive not initialized"},
    {52, "Dispensing drive movement error"},
    {53, "Maximum volume in tip reached"},
    {54, "Position out of permitted area"},
    {55, "Y drive initialization failed"},
    {56, "Y drive not initialized"},
    {57, "Y drive movement error"},
    {58, "Y drive position outside of permitted area"},
    {60, "Z drive initialization failed"},
    {61, "Z drive not initialized"},
    {62, "Z drive movement error"},
    {63, "Z drive position outside of permitted area"},
    {65, "Squeezer drive initialization failed"},
    {66, "Squeezer drive not initialized"},
    {67, "Squeezer drive movement error: drive blocked or incremental sensor fault"},
    {68, "Squeezer drive position outside of permitted area"},
    {70, "No liquid level found"},
    {71, "Not enough liquid present"},
    {75, "No tip picked up"},
    {76, "Tip already picked up"},
    {81, "Clot detected"},
    {82, "TADM measurement out of lower limit curve"},
    {83, "TADM measurement out of upper limit curve"},
    {84, "Not enough memory for TADM measurement"},
    {90, "Limit curve not resettable"},
    {91, "Limit curve not programmable"},
    {92, "Limit curve not found"},
    {93, "Limit curve data incorrect"},
    {94, "Not enough memory for limit curve"},
    {95, "Invalid limit curve index"},
    {96, "Limit curve already stored"},
    {-1, NULL},
};

static const num_text_t trace_iswap[] = {
    {20, "No communication to EEPROM"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {33, "FW doesn't match to HW"},
    {36, "Stop during execution of command"},
    {37, "The adjustment sensor did not switch"},
    {38, "The adjustment sensor cannot be searched"},
    {40, "No parallel processes permitted"},
    {41, "No parallel processes permitted"},
    {42, "No parallel processes permitted"},
    {50, "Y-drive initialization failed"},
    {51, "Y-drive not initialized"},
    {52, "Y-drive movement error: drive locked or incremental sensor fault"},
    {53, "Y-drive movement error: position counter over/underflow"},
    {60, "Z-drive initialization failed"},
    {61, "Z-drive not initialized"},
    {62, "Z-drive movement error: drive locked or incremental sensor fault"},
    {63, "Z-drive movement error: position counter over/underflow"},
    {70, "Rotation-drive initialization failed"},
    {71, "Rotation-drive not initialized"},
    {72, "Rotation-drive movement error: drive locked or incremental sensor fault"},
    {73, "Rotation-drive movement error: position counter over/underflow"},
    {80, "Wrist twist drive initialization failed"},
    {81, "Wrist twist drive not initialized"},
    {82, "Wrist twist drive movement error: drive locked or incremental sensor fault"},
    {83, "Wrist twist drive movement error: position counter over/underflow"},
    {85, "Gripper drive: communication error to gripper DMS digital potentiometer"},
    {86, "Gripper drive: auto adjustment of DMS digital potentiometer not possible"},
    {89, "Gripper drive movement error: drive locked or incremental sensor fault during "
         "gripping"},
    {90, "Gripper drive initialization failed"},
    {91, "iSWAP not initialized"},
    {92, "Gripper drive movement error: drive locked or incremental sensor fault during "
         "release"},
    {93, "Gripper drive movement error: position counter over/underflow"},
    {94, "Plate not found"},
    {96, "Plate not available"},
    {97, "Unexpected object found"},
    {-1, NULL},
};

static const num_text_t trace_xdrives[] = {
    {0, "No error"},
    {20, "Transmission error (I2C bus or EEPROM)"},
    {25, "Flash EPROM data incorrect"},
    {26, "Flash EPROM cannot be programmed"},
    {27, "Flash EPROM cannot be erased"},
    {28, "Flash EPROM checksum error"},
    {30, "Unknown command"},
    {31, "Unknown parameter"},
    {32, "Parameter out of range"},
    {35, "Voltages outside permitted range"},
    {36, "Stop during execution of command"},
    {40, "No parallel processes permitted (X drive 1)"},
    {41, "No parallel processes permitted (X drive 2)"},
    {42, "No parallel processes permitted (reserve drive)"},
    {50, "X drive 1: initialization failed"},
    {51, "X drive 1: drive not initialized"},
    {52, "X drive 1: movement error (drive blocked or lag too high)"},
    {53, "X drive 1: position error (drive displaced)"},
    {54, "X drive 1: dispense-on-fly error"},
    {55, "X drive 1: positioning-to-dispense-on-fly error"},
    {70, "X drive 2: initialization failed"},
    {71, "X drive 2: drive not initialized"},
    {72, "X drive 2: movement error (drive blocked or lag too high)"},
    {73, "X drive 2: position error (drive displaced)"},
    {74, "X drive 2: dispense-on-fly error"},
    {75, "X drive 2: positioning-to-dispense-on-fly error"},
    {80, "Reserve drive: initialization failed"},
    {81, "Reserve drive: drive not initialized"},
    {82, "Reserve drive: movement error (drive blocked or lag too high)"},
    {-1, NULL},
};

/* Module id prefix -> trace table; "P" covers P1..PG (and PX). */
static const struct {
    const char *prefix;
    const num_text_t *table;
} trace_tables[] = {
    {"C0", trace_master}, {"I0", trace_autoload}, {"H0", trace_head96},
    {"R0", trace_iswap},  {"X0", trace_xdrives},  {"P", trace_pip},
};

static const char *num_lookup(const num_text_t *t, int n)
{
    for (; t->text; t++)
        if (t->n == n)
            return t->text;
    return NULL;
}

const char *star_module_name(const char *module)
{
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++)
        if (strncmp(modules[i].id, module, 2) == 0)
            return modules[i].name;
    return NULL;
}

const char *star_error_text(int code)
{
    return num_lookup(master_codes, code);
}

const char *star_trace_text(const char *module, int trace)
{
    for (size_t i = 0; i < sizeof trace_tables / sizeof trace_tables[0]; i++) {
        size_t n = strlen(trace_tables[i].prefix);
        if (strncmp(module, trace_tables[i].prefix, n) == 0)
            return num_lookup(trace_tables[i].table, trace);
    }
    return NULL;
}

/* ---- builder ---- */

static int is_module(const char *m)
{
    return m && isupper((unsigned char)m[0]) &&
           (isupper((unsigned char)m[1]) || isdigit((unsigned char)m[1])) && m[2] == '\0';
}

static int is_name(const char *n)
{
    return n && islower((unsigned char)n[0]) && islower((unsigned char)n[1]) && n[2] == '\0';
}

static void fail(star_builder_t *b, int err)
{
    if (!b->o.err)
        b->o.err = err;
}

void star_begin(star_builder_t *b, char *buf, size_t cap, const char *module, const char *cmd,
                int id)
{
    proto_out_init(&b->o, buf, cap);
    if (!is_module(module) || !cmd || !isupper((unsigned char)cmd[0]) ||
        !isupper((unsigned char)cmd[1]) || cmd[2] != '\0' || id < STAR_NO_ID || id > 9999) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_fmt(&b->o, "%s%s", module, cmd);
    if (id != STAR_NO_ID)
        proto_out_fmt(&b->o, "id%04d", id);
}

static int fits(long v, int width)
{
    if (width < 1 || width > 12)
        return 0;
    long lim = 1;
    for (int i = 0; i < width - (v < 0); i++)
        lim *= 10;
    return v < 0 ? v > -lim && width > 1 : v < lim;
}

static void put_num(star_builder_t *b, long v, int width)
{
    if (!fits(v, width)) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_fmt(&b->o, "%0*ld", width, v);
}

void star_int(star_builder_t *b, const char *name, long v, int width)
{
    if (!is_name(name)) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_mem(&b->o, name, 2);
    put_num(b, v, width);
}

void star_hex(star_builder_t *b, const char *name, unsigned long v, int width)
{
    if (!is_name(name) || width < 1 || width > 16 || (width < 16 && v >> (4 * width))) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_mem(&b->o, name, 2);
    proto_out_fmt(&b->o, "%0*lX", width, v);
}

void star_str(star_builder_t *b, const char *name, const char *s)
{
    if (!is_name(name)) {
        fail(b, LAB_ERANGE);
        return;
    }
    /* Two lowercase letters in a row would read back as the next parameter's name; line
     * terminators would split the message. */
    for (const char *p = s; *p; p++)
        if (*p == '\r' || *p == '\n' ||
            (islower((unsigned char)p[0]) && islower((unsigned char)p[1]))) {
            fail(b, LAB_ERANGE);
            return;
        }
    proto_out_mem(&b->o, name, 2);
    proto_out_mem(&b->o, s, strlen(s));
}

void star_list(star_builder_t *b, const char *name, const long *v, size_t n, int width,
               size_t channels)
{
    if (!is_name(name) || n == 0 || n > channels) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_mem(&b->o, name, 2);
    for (size_t i = 0; i < n; i++) {
        if (i)
            proto_out_mem(&b->o, " ", 1);
        put_num(b, v[i], width);
    }
    if (n < channels)
        proto_out_mem(&b->o, "&", 1);
}

size_t star_pattern_len(unsigned mask, size_t channels)
{
    size_t n = 0;
    for (size_t ch = 0; ch < channels && ch < 32; ch++)
        if (mask & (1u << ch))
            n = ch + 1;
    /* base.py: "We do want to have a trailing zero ... if the length < 8" (num_channels) */
    return n && n < channels ? n + 1 : n;
}

void star_list_pattern(star_builder_t *b, const char *name, const long *v, unsigned mask,
                       size_t channels, int width, star_fill_t fill)
{
    size_t n = star_pattern_len(mask, channels);
    if (n == 0 || channels > 32) {
        fail(b, LAB_ERANGE);
        return;
    }
    long first = 0;
    for (size_t ch = 0; ch < n; ch++)
        if (mask & (1u << ch)) {
            first = v[ch];
            break;
        }
    long out[32];
    for (size_t ch = 0; ch < n; ch++)
        out[ch] = (mask & (1u << ch)) ? v[ch] : fill == STAR_FILL_FIRST ? first : 0;
    star_list(b, name, out, n, width, channels);
}

static int code_ok(int v)
{
    return v >= 0 && v <= 99;
}

void star_error(star_builder_t *b, int code, int trace)
{
    if (!code_ok(code) || !code_ok(trace)) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_fmt(&b->o, "er%02d/%02d", code, trace);
}

void star_module_error(star_builder_t *b, const char *module, int code, int trace)
{
    if (!is_module(module) || !code_ok(code) || !code_ok(trace)) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_fmt(&b->o, " %s%02d/%02d", module, code, trace);
}

void star_slave_error(star_builder_t *b, int trace)
{
    if (!code_ok(trace)) {
        fail(b, LAB_ERANGE);
        return;
    }
    proto_out_fmt(&b->o, "er%02d", trace);
}

int star_end(star_builder_t *b, int line)
{
    if (line)
        proto_out_mem(&b->o, "\r\n", 2);
    return proto_out_result(&b->o);
}

/* ---- parser ---- */

static int two_digits(const char *s, int *v)
{
    if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]))
        return 0;
    *v = (s[0] - '0') * 10 + (s[1] - '0');
    return 1;
}

static int add_error(star_msg_t *m, const char *module, int code, int trace)
{
    /* 00 and 00/00 mean "no error" and are not reported. */
    if (trace == 0 && code <= 0)
        return LAB_OK;
    if (m->n_errors == STAR_MAX_ERRORS)
        return LAB_ETOOLONG;
    star_err_t *e = &m->errors[m->n_errors++];
    memcpy(e->module, module, 2);
    e->module[2] = '\0';
    e->code = code;
    e->trace = trace;
    e->module_name = star_module_name(e->module);
    e->code_text = code >= 0 ? star_error_text(code) : NULL;
    e->trace_text = star_trace_text(e->module, trace);
    return LAB_OK;
}

/* "er##/##" then module entries "[ ]XY##/##" (master) or "er##" (slave). */
static int parse_er(star_msg_t *m, const char *s, size_t *p, size_t end)
{
    int code, trace, rc;
    m->has_er = 1;
    if (*p + 2 > end || !two_digits(s + *p, &code))
        return LAB_ESYNTAX;
    if (*p + 5 <= end && s[*p + 2] == '/' && two_digits(s + *p + 3, &trace)) {
        *p += 5;
        if ((rc = add_error(m, m->module, code, trace)))
            return rc;
        for (;;) {
            size_t q = *p;
            while (q < end && s[q] == ' ')
                q++;
            if (q + 7 > end || !isupper((unsigned char)s[q]) || !isalnum((unsigned char)s[q + 1]) ||
                islower((unsigned char)s[q + 1]) || s[q + 4] != '/' ||
                !two_digits(s + q + 2, &code) || !two_digits(s + q + 5, &trace))
                break;
            if ((rc = add_error(m, s + q, code, trace)))
                return rc;
            *p = q + 7;
        }
        return LAB_OK;
    }
    if (strcmp(m->module, "C0") == 0)
        return LAB_ESYNTAX; /* the master always writes er##/## */
    *p += 2;
    return add_error(m, m->module, -1, code);
}

static int parse_msg(const char *s, size_t len, star_msg_t *m, size_t *pp)
{
    if (len < 4)
        return LAB_ESYNTAX;
    char mod[3] = {s[0], s[1], 0}, cmd[3] = {s[2], s[3], 0};
    if (!is_module(mod) || !isupper((unsigned char)cmd[0]) || !isupper((unsigned char)cmd[1]))
        return LAB_ESYNTAX;
    memcpy(m->module, mod, 3);
    memcpy(m->cmd, cmd, 3);
    size_t p = 4;
    *pp = p;
    while ((*pp = p) < len) {
        if (s[p] == ' ') {
            p++;
            continue;
        }
        if (p + 2 > len || !islower((unsigned char)s[p]) || !islower((unsigned char)s[p + 1]))
            return LAB_ESYNTAX;
        char name[3] = {s[p], s[p + 1], 0};
        p += 2;
        if (strcmp(name, "er") == 0) {
            int rc = parse_er(m, s, &p, len);
            if (rc) {
                *pp = p;
                return rc;
            }
            continue;
        }
        size_t v = p;
        while (p < len &&
               !(p + 1 < len && islower((unsigned char)s[p]) && islower((unsigned char)s[p + 1])))
            p++;
        size_t vend = p;
        while (vend > v && s[vend - 1] == ' ')
            vend--;
        if (vend > v && s[vend - 1] == '&')
            vend--;
        if (strcmp(name, "id") == 0) {
            int hi, lo;
            if (vend - v != 4 || !two_digits(s + v, &hi) || !two_digits(s + v + 2, &lo)) {
                *pp = v;
                return LAB_ESYNTAX;
            }
            m->id = hi * 100 + lo;
            continue;
        }
        if (m->n_params == STAR_MAX_PARAMS)
            return LAB_ETOOLONG;
        star_param_t *prm = &m->params[m->n_params++];
        memcpy(prm->name, name, 3);
        prm->val = s + v;
        prm->len = vend - v;
    }
    return LAB_OK;
}

int star_parse(const char *s, size_t len, star_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->id = STAR_NO_ID;
    size_t at = 0;
    int rc = parse_msg(s, len, m, &at);
    m->err_at = rc ? at : 0;
    return rc;
}

int star_msg_failed(const star_msg_t *m)
{
    return m->n_errors > 0;
}

const star_param_t *star_param(const star_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (strncmp(m->params[i].name, name, 2) == 0)
            return &m->params[i];
    return NULL;
}

/* Signed decimal in [s, s+n); spaces are not allowed inside one number. */
static int parse_long(const char *s, size_t n, long *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n || n - i > 12)
        return LAB_ESYNTAX;
    long v = 0;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return LAB_ESYNTAX;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return LAB_OK;
}

int star_param_int(const star_msg_t *m, const char *name, long *out)
{
    const star_param_t *p = star_param(m, name);
    if (!p)
        return LAB_EUNKNOWN;
    return parse_long(p->val, p->len, out);
}

int star_param_hex(const star_msg_t *m, const char *name, unsigned long *out)
{
    const star_param_t *p = star_param(m, name);
    if (!p)
        return LAB_EUNKNOWN;
    if (p->len == 0 || p->len > 16)
        return LAB_ESYNTAX;
    unsigned long v = 0;
    for (size_t i = 0; i < p->len; i++) {
        char c = p->val[i];
        int d = isdigit((unsigned char)c) ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0)
            return LAB_ESYNTAX;
        v = v << 4 | (unsigned long)d;
    }
    *out = v;
    return LAB_OK;
}

int star_param_list(const star_msg_t *m, const char *name, long *out, size_t cap, size_t *n)
{
    const star_param_t *p = star_param(m, name);
    if (!p)
        return LAB_EUNKNOWN;
    size_t i = 0, k = 0;
    while (i < p->len) {
        size_t j = i;
        while (j < p->len && p->val[j] != ' ')
            j++;
        if (j > i) {
            if (k == cap)
                return LAB_ENOSPACE;
            int rc = parse_long(p->val + i, j - i, &out[k]);
            if (rc)
                return rc;
            k++;
        }
        i = j + 1;
    }
    *n = k;
    return k ? LAB_OK : LAB_ESYNTAX;
}

/* ---- command specifications ---- */

/* Widths read off the documented command strings: C0TP test_tip_pickup_01, C0TR test_tip_drop_56,
 * C0AS test_single_channel_aspiration, C0DS the single-channel jet dispense test (STAR_tests.py);
 * C0DI from the field formats of initialize_pipetting_channels (STAR_backend.py). */
static const star_param_spec_t spec_tp[] = {
    {"xp", 5, 1, 0}, {"yp", 4, 1, 0}, {"tm", 1, 1, 0}, {"tt", 2, 0, 0},
    {"tp", 4, 0, 0}, {"tz", 4, 0, 0}, {"th", 4, 0, 0}, {"td", 1, 0, 0},
};
/* discard_tip passes tp, tz, th and te as plain ints: up to 4 digits, unpadded. */
static const star_param_spec_t spec_tr[] = {
    {"xp", 5, 1, 0}, {"yp", 4, 1, 0}, {"tm", 1, 1, 0}, {"tp", 4, 0, 1},
    {"tz", 4, 0, 1}, {"th", 4, 0, 1}, {"te", 4, 0, 1}, {"ti", 1, 0, 0},
};
static const star_param_spec_t spec_as[] = {
    {"at", 1, 1, 0}, {"tm", 1, 1, 0}, {"xp", 5, 1, 0}, {"yp", 4, 1, 0}, {"th", 4, 0, 0},
    {"te", 4, 0, 0}, {"lp", 4, 1, 0}, {"ch", 3, 1, 0}, {"zl", 4, 1, 0}, {"po", 4, 1, 0},
    {"zu", 4, 1, 0}, {"zr", 5, 1, 0}, {"zx", 4, 1, 0}, {"ip", 4, 1, 0}, {"it", 1, 1, 0},
    {"fp", 4, 1, 0}, {"av", 5, 1, 0}, {"as", 4, 1, 0}, {"ta", 3, 1, 0}, {"ba", 4, 1, 0},
    {"oa", 3, 1, 0}, {"lm", 1, 1, 0}, {"ll", 1, 1, 0}, {"lv", 1, 1, 0}, {"zo", 3, 1, 0},
    {"ld", 2, 1, 0}, {"de", 4, 1, 0}, {"wt", 2, 1, 0}, {"mv", 5, 1, 0}, {"mc", 2, 1, 0},
    {"mp", 3, 1, 0}, {"ms", 4, 1, 0}, {"mh", 4, 1, 0}, {"gi", 3, 1, 0}, {"gj", 1, 0, 0},
    {"gk", 1, 0, 0}, {"lk", 1, 1, 0}, {"ik", 4, 1, 0}, {"sd", 4, 1, 0}, {"se", 4, 1, 0},
    {"sz", 4, 1, 0}, {"io", 4, 1, 0},
};
static const star_param_spec_t spec_ds[] = {
    {"dm", 1, 1, 0}, {"tm", 1, 1, 0}, {"xp", 5, 1, 0}, {"yp", 4, 1, 0}, {"zx", 4, 1, 0},
    {"lp", 4, 1, 0}, {"zl", 4, 1, 0}, {"po", 4, 1, 0}, {"ip", 4, 1, 0}, {"it", 1, 1, 0},
    {"fp", 4, 1, 0}, {"zu", 4, 1, 0}, {"zr", 5, 1, 0}, {"th", 4, 0, 0}, {"te", 4, 0, 0},
    {"dv", 5, 1, 0}, {"ds", 4, 1, 0}, {"ss", 4, 1, 0}, {"rv", 3, 1, 0}, {"ta", 3, 1, 0},
    {"ba", 4, 1, 0}, {"lm", 1, 1, 0}, {"dj", 2, 0, 0}, {"zo", 3, 1, 0}, {"ll", 1, 1, 0},
    {"lv", 1, 1, 0}, {"de", 4, 1, 0}, {"wt", 2, 1, 0}, {"mv", 5, 1, 0}, {"mc", 2, 1, 0},
    {"mp", 3, 1, 0}, {"ms", 4, 1, 0}, {"mh", 4, 1, 0}, {"gi", 3, 1, 0}, {"gj", 1, 0, 0},
    {"gk", 1, 0, 0},
};
static const star_param_spec_t spec_di[] = {
    {"xp", 5, 1, 0}, {"yp", 4, 1, 0}, {"tp", 4, 0, 0}, {"tz", 4, 0, 0},
    {"te", 4, 0, 0}, {"tm", 1, 1, 0}, {"tt", 2, 0, 0}, {"ti", 1, 0, 0},
};

/* define_tip_needle: tt##, tf (bool), tl####, tv#####, tg (TipSize), tu (TipPickupMethod). */
static const star_param_spec_t spec_tt[] = {
    {"tt", 2, 0, 0}, {"tf", 1, 0, 0}, {"tl", 4, 0, 0},
    {"tv", 5, 0, 0}, {"tg", 1, 0, 0}, {"tu", 1, 0, 0},
};

#define SPEC(m, c, title, t)                                                                       \
    {                                                                                              \
        m, c, title, t, sizeof t / sizeof t[0]                                                     \
    }
static const star_cmd_spec_t specs[] = {
    SPEC("C0", "TP", "tip pick-up", spec_tp),
    SPEC("C0", "TR", "tip discard", spec_tr),
    SPEC("C0", "AS", "aspirate", spec_as),
    SPEC("C0", "DS", "dispense", spec_ds),
    SPEC("C0", "DI", "initialize pipetting channels", spec_di),
    SPEC("C0", "TT", "tip/needle definition", spec_tt),
};

const star_cmd_spec_t *star_cmd_spec(const char *module, const char *cmd)
{
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (strcmp(specs[i].module, module) == 0 && strcmp(specs[i].cmd, cmd) == 0)
            return &specs[i];
    return NULL;
}

static int item_ok(const char *s, size_t n, int width, int upto)
{
    if (upto ? n == 0 || n > (size_t)width : n != (size_t)width)
        return 0;
    size_t i = (s[0] == '-' || s[0] == '+') && n > 1;
    for (; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int value_ok(const star_param_t *p, const star_param_spec_t *ps, size_t channels)
{
    if (!ps->list)
        return item_ok(p->val, p->len, ps->width, ps->upto);
    size_t i = 0, count = 0;
    while (i < p->len) {
        size_t j = i;
        while (j < p->len && p->val[j] != ' ')
            j++;
        if (!item_ok(p->val + i, j - i, ps->width, ps->upto) || ++count > channels)
            return 0;
        i = j + 1;
    }
    return count > 0 && p->val[p->len - 1] != ' ';
}

int star_check_cmd(const star_msg_t *m, size_t channels, char which[3])
{
    const star_cmd_spec_t *spec = star_cmd_spec(m->module, m->cmd);
    which[0] = '\0';
    if (!spec)
        return 30;
    for (size_t i = 0; i < m->n_params; i++) {
        const star_param_spec_t *ps = NULL;
        for (size_t k = 0; k < spec->n && !ps; k++)
            if (strcmp(spec->params[k].name, m->params[i].name) == 0)
                ps = &spec->params[k];
        memcpy(which, m->params[i].name, 3);
        if (!ps)
            return 31;
        if (!value_ok(&m->params[i], ps, channels))
            return 32;
    }
    for (size_t k = 0; k < spec->n; k++) {
        if (!star_param(m, spec->params[k].name)) {
            memcpy(which, spec->params[k].name, 3);
            return 33;
        }
    }
    which[0] = '\0';
    return 0;
}

/* ---- pending ---- */

void star_pending_init(star_pending_t *t)
{
    memset(t, 0, sizeof *t);
}

static star_pending_entry_t *free_slot(star_pending_t *t)
{
    for (size_t i = 0; i < STAR_PENDING_MAX; i++)
        if (!t->e[i].used)
            return &t->e[i];
    return NULL;
}

static int id_in_use(const star_pending_t *t, int id)
{
    for (size_t i = 0; i < STAR_PENDING_MAX; i++)
        if (t->e[i].used && t->e[i].id == id)
            return 1;
    return 0;
}

static int pending_put(star_pending_t *t, int id, const char *module, const char *cmd, void *ud)
{
    if (!is_module(module) || !cmd || strlen(cmd) != 2)
        return LAB_ERANGE;
    star_pending_entry_t *e = free_slot(t);
    if (!e)
        return LAB_EFULL;
    *e = (star_pending_entry_t){1, id, {module[0], module[1], 0}, {cmd[0], cmd[1], 0}, ud};
    return id;
}

int star_pending_add(star_pending_t *t, const char *module, const char *cmd, void *ud)
{
    if (!free_slot(t))
        return LAB_EFULL;
    int id = t->last_id;
    do
        id = (id + 1) % 10000;
    while (id_in_use(t, id));
    t->last_id = id;
    return pending_put(t, id, module, cmd, ud);
}

int star_pending_add_noid(star_pending_t *t, const char *module, const char *cmd, void *ud)
{
    int rc = pending_put(t, STAR_NO_ID, module, cmd, ud);
    return rc < 0 && rc != STAR_NO_ID ? rc : LAB_OK;
}

int star_pending_take(star_pending_t *t, const star_msg_t *reply, void **ud)
{
    for (size_t i = 0; i < STAR_PENDING_MAX; i++) {
        star_pending_entry_t *e = &t->e[i];
        if (!e->used)
            continue;
        int hit = reply->id != STAR_NO_ID
                      ? e->id == reply->id
                      : e->id == STAR_NO_ID && strcmp(e->module, reply->module) == 0 &&
                            strcmp(e->cmd, reply->cmd) == 0;
        if (hit) {
            *ud = e->ud;
            e->used = 0;
            return LAB_OK;
        }
    }
    return LAB_ENOMATCH;
}

size_t star_pending_count(const star_pending_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < STAR_PENDING_MAX; i++)
        n += (size_t)t->e[i].used;
    return n;
}
