/* The thread->loop queue: other threads (Paho's, Modbus bus workers) hand work to the loop thread
 * only through this. A locked list plus uv_async_send; because uv_async_send coalesces, the loop
 * side drains the whole list on every wakeup. */
#ifndef LAB_CORE_TQ_H
#define LAB_CORE_TQ_H

#include <uv.h>

typedef struct lab_tq_item {
    struct lab_tq_item *next;
    /* Runs on the loop thread; owns the item (usually frees it). */
    void (*fn)(struct lab_tq_item *item);
} lab_tq_item_t;

typedef struct lab_tq {
    uv_async_t async;
    uv_mutex_t lock;
    lab_tq_item_t *head, *tail;
    int closed;
} lab_tq_t;

int lab_tq_init(lab_tq_t *q, uv_loop_t *loop);
/* Any thread. Producers must be stopped before lab_tq_close: an item pushed after it is an
 * invariant violation. */
void lab_tq_push(lab_tq_t *q, lab_tq_item_t *item);
/* Loop thread: run what is queued, then close the async handle (cb may be NULL). */
void lab_tq_close(lab_tq_t *q, uv_close_cb cb);

#endif
