/* libFuzzer target: MQTT report validation; accepted documents re-encode and re-parse to the
 * same readings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static report_t r, back;
    static char buf[REPORT_MAX_VALUES * 96 + 128];
    report_error_t err;
    if (report_parse((const char *)data, size, &r, &err) != LAB_OK) {
        if (err.path[0] != '$' || err.message[0] == '\0')
            abort();
        return 0;
    }
    int n = report_encode(&r, buf, sizeof buf);
    if (n <= 0 || report_parse(buf, (size_t)n, &back, &err) != LAB_OK || back.n != r.n)
        abort();
    for (size_t i = 0; i < r.n; i++)
        if (strcmp(back.values[i].name, r.values[i].name) != 0 ||
            back.values[i].value != r.values[i].value)
            abort();
    char id[64];
    report_topic_parse((const char *)buf, id, sizeof id);
    return 0;
}
