/* libFuzzer target: the wire recording reader, one line at a time. A line is accepted or refused
 * with a message naming its line; an accepted data event holds exactly its "hex" bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/proto.h"
#include "protocols/wire_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_item_t it;
    char err[256] = "";
    int rc = wire_parse_line((const char *)data, size, 3, &it, err, sizeof err);
    if (rc) {
        if (rc > 0 || strncmp(err, "line 3: ", 8) != 0 || it.data || it.text)
            abort();
        return 0;
    }
    int has_data =
        it.kind == WIRE_TX || it.kind == WIRE_RX || it.kind == WIRE_REQ || it.kind == WIRE_RSP;
    if (has_data != (it.data != NULL) || (has_data && it.len == 0) ||
        (it.kind == WIRE_HEADER && !it.id[0]) || it.unit < 0 || it.unit > 255)
        abort();
    wire_item_clear(&it);
    return 0;
}
