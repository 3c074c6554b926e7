/* Error codes: negative ints, one table, one lab_strerror(). Plus the two asserts.
 *
 * Every function that can fail returns 0 or one of these (docs/errors.md). An instrument's error
 * (drivers/driver.h lab_drv_error_t) carries one of them too, with the device's own code beside
 * it. Each code has a stable name that JSON shows ("timeout", "device_error"): clients match on
 * it, so a name never changes once shipped; the unit test test_err pins every one. */
#ifndef LAB_CORE_ERR_H
#define LAB_CORE_ERR_H

/* X(symbol, code, text for people, name in JSON). Append new codes at the end. */
#define LAB_ERRORS(X)                                                                              \
    X(ENOMEM, -1, "out of memory", "out_of_memory")                                                \
    X(EINVAL, -2, "invalid argument", "bad_params")                                                \
    X(EIO, -3, "input/output error", "io_error")                                                   \
    X(ENOTFOUND, -4, "not found", "not_found")                                                     \
    X(EEXIST, -5, "already exists", "exists")                                                      \
    X(ETIMEDOUT, -6, "timed out", "timeout")                                                       \
    X(EBUSY, -7, "busy", "busy")                                                                   \
    X(ECONFIG, -8, "configuration error", "config_error")                                          \
    X(EDB, -9, "database error", "database_error")                                                 \
    X(ESHUTDOWN, -10, "shutting down", "shutting_down")                                            \
    X(ETOOBIG, -11, "too large", "too_large")                                                      \
    X(EAUTH, -12, "not authenticated", "unauthenticated")                                          \
    X(EFORBIDDEN, -13, "forbidden", "forbidden")                                                   \
    X(ECONN, -14, "connection failed", "connection_failed")                                        \
    X(EPROTO, -15, "protocol error", "protocol_error")                                             \
    X(EDEVICE, -16, "device error", "device_error")                                                \
    X(ECONFLICT, -17, "conflict", "conflict")                                                      \
    X(ESTATE, -18, "invalid state", "state")                                                       \
    X(ENOACTION, -19, "no such action", "unknown_action")                                          \
    X(EOFFLINE, -20, "offline", "offline")                                                         \
    X(ECANCELLED, -21, "cancelled", "cancelled")                                                   \
    X(EINTERNAL, -22, "internal error", "internal")                                                \
    X(EAGAIN, -23, "incomplete frame, more bytes needed", "incomplete_frame")                      \
    X(ESYNTAX, -24, "malformed frame", "malformed_frame")                                          \
    X(ERANGE, -25, "value out of range", "out_of_range")                                           \
    X(ETOOLONG, -26, "frame longer than the protocol allows", "frame_too_long")                    \
    X(ENOSPACE, -27, "output buffer too small", "no_space")                                        \
    X(ECHECKSUM, -28, "checksum mismatch", "checksum")                                             \
    X(EUNKNOWN, -29, "unknown command or code", "unknown_code")                                    \
    X(ENOMATCH, -30, "reply matches no pending command", "no_match")                               \
    X(EFULL, -31, "table full", "table_full")                                                      \
    X(EGARBAGE, -32, "unexpected byte between frames", "garbage")                                  \
    X(ENUMERIC, -33, "numerical failure", "numerical_failure")

enum lab_error {
    LAB_OK = 0,
#define LAB_ERR_ENUM(name, code, text, json) LAB_##name = code,
    LAB_ERRORS(LAB_ERR_ENUM)
#undef LAB_ERR_ENUM
};

const char *lab_strerror(int err);
/* The symbolic name ("ETIMEDOUT"), for logs. */
const char *lab_errname(int err);
/* The stable name JSON shows ("timeout"; "ok" for LAB_OK, "unknown_error" for a code not in the
 * table): an instrument error's "code" in the API, MQTT, the store and the CLI. */
const char *lab_err_json_name(int err);

void lab_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* A broken invariant of our own: abort, the state cannot be trusted. */
#define LAB_ASSERT(x)                                                                              \
    do {                                                                                           \
        if (!(x))                                                                                  \
            lab_assert_fail(#x, __FILE__, __LINE__);                                               \
    } while (0)

/* Something that must not take the daemon down (a bad reply, an odd state): log and recover. */
#define LAB_CHECK(x, ...)                                                                          \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            lab_log_write(LAB_LOG_ERROR, "check", "check failed: %s at %s:%d", #x, __FILE__,       \
                          __LINE__);                                                               \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
    } while (0)

#endif
