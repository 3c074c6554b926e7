/* The error table's texts and names, and the fatal assert. */
#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>

const char *lab_strerror(int err)
{
    switch (err) {
    case LAB_OK:
        return "ok";
#define LAB_ERR_TEXT(name, code, text, json)                                                       \
    case code:                                                                                     \
        return text;
        LAB_ERRORS(LAB_ERR_TEXT)
#undef LAB_ERR_TEXT
    }
    return "unknown error";
}

const char *lab_errname(int err)
{
    switch (err) {
    case LAB_OK:
        return "OK";
#define LAB_ERR_NAME(name, code, text, json)                                                       \
    case code:                                                                                     \
        return #name;
        LAB_ERRORS(LAB_ERR_NAME)
#undef LAB_ERR_NAME
    }
    return "EUNKNOWN";
}

const char *lab_err_json_name(int err)
{
    switch (err) {
    case LAB_OK:
        return "ok";
#define LAB_ERR_JSON(name, code, text, json)                                                       \
    case code:                                                                                     \
        return json;
        LAB_ERRORS(LAB_ERR_JSON)
#undef LAB_ERR_JSON
    }
    return "unknown_error";
}

void lab_assert_fail(const char *expr, const char *file, int line)
{
    lab_log_write(LAB_LOG_ERROR, "assert", "invariant broken: %s at %s:%d", expr, file, line);
    abort();
}
