/* A day's load in a stopped labloopd's local store: runs copied from one the daemon itself ran. */
#ifndef LAB_TESTS_BENCH_LOAD_DAY_H
#define LAB_TESTS_BENCH_LOAD_DAY_H

/* Writes n finished runs into state_dir's store (labloopd must not be running on it) through the
 * store's own operations, as the daemon writes them: lab_run_insert with the submitted document
 * (queued_doc, the API's answer to the submission), then lab_run_update to "done" with the
 * finished document (done_doc, read back once the run was done) and one "measurement" outbox row
 * per reading. Each copy gets a new id, a plate LOAD-NNNN, and every time in it moved back so
 * that the n runs spread over the day before the template's. 0 or a negative lab error. */
int load_day(const char *state_dir, const char *queued_doc, const char *done_doc, int n);

#endif
