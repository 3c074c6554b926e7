/* Logging: levels, a subsystem tag, key=value fields in the message; one line per call on stderr.
 */
#ifndef LAB_CORE_LOG_H
#define LAB_CORE_LOG_H

enum lab_log_level { LAB_LOG_DEBUG = 0, LAB_LOG_INFO, LAB_LOG_WARN, LAB_LOG_ERROR };

extern int lab_log_threshold;

void lab_log_set_level(int level);
/* "debug", "info", "warn", "error" -> level, or -1. */
int lab_log_level_parse(const char *name);
const char *lab_log_level_name(int level);
void lab_log_write(int level, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Arguments are not evaluated when the level is off. */
#define LAB_LOG(level, sub, ...)                                                                   \
    do {                                                                                           \
        if ((level) >= lab_log_threshold)                                                          \
            lab_log_write((level), (sub), __VA_ARGS__);                                            \
    } while (0)
#define log_debug(sub, ...) LAB_LOG(LAB_LOG_DEBUG, sub, __VA_ARGS__)
#define log_info(sub, ...) LAB_LOG(LAB_LOG_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...) LAB_LOG(LAB_LOG_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) LAB_LOG(LAB_LOG_ERROR, sub, __VA_ARGS__)

#endif
