/* labloop-sim's own logging: one line per event on stderr (the simulator never links daemon/core).
 */
#ifndef LAB_SIM_LOG_H
#define LAB_SIM_LOG_H
void sim_log(const char *level, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define sim_info(sub, ...) sim_log("info", sub, __VA_ARGS__)
#define sim_warn(sub, ...) sim_log("warn", sub, __VA_ARGS__)
#define sim_error(sub, ...) sim_log("error", sub, __VA_ARGS__)
#endif
