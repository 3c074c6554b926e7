/* Error codes: negative ints, one table, one lab_strerror(). Plus the two asserts. */
#ifndef LAB_CORE_ERR_H
#define LAB_CORE_ERR_H

#define LAB_ERRORS(X)                                                                              \
    X(ENOMEM, -1, "out of memory")                                                                 \
    X(EINVAL, -2, "invalid argument")                                                              \
    X(EIO, -3, "input/output error")                                                               \
    X(ENOTFOUND, -4, "not found")                                                                  \
    X(EEXIST, -5, "already exists")                                                                \
    X(ETIMEDOUT, -6, "timed out")                                                                  \
    X(EBUSY, -7, "busy")                                                                           \
    X(ECONFIG, -8, "configuration error")                                                          \
    X(EDB, -9, "database error")                                                                   \
    X(ESHUTDOWN, -10, "shutting down")                                                             \
    X(ETOOBIG, -11, "too large")                                                                   \
    X(EAUTH, -12, "not authenticated")                                                             \
    X(EFORBIDDEN, -13, "forbidden")                                                                \
    X(ECONN, -14, "connection failed")                                                             \
    X(EPROTO, -15, "protocol error")                                                               \
    X(EDEVICE, -16, "device error")                                                                \
    X(ECONFLICT, -17, "conflict")                                                                  \
    X(ESTATE, -18, "invalid state")

enum lab_error {
    LAB_OK = 0,
#define LAB_ERR_ENUM(name, code, text) LAB_##name = code,
    LAB_ERRORS(LAB_ERR_ENUM)
#undef LAB_ERR_ENUM
};

const char *lab_strerror(int err);
/* The symbolic name ("ETIMEDOUT"), for logs and JSON. */
const char *lab_errname(int err);

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
