/* The thread->loop queue. */
#include "core/tq.h"
#include "core/err.h"
#include "core/log.h"

static void tq_drain(uv_async_t *a)
{
    lab_tq_t *q = a->data;
    for (;;) {
        uv_mutex_lock(&q->lock);
        lab_tq_item_t *it = q->head;
        q->head = q->tail = NULL;
        uv_mutex_unlock(&q->lock);
        if (!it)
            return;
        while (it) {
            lab_tq_item_t *next = it->next;
            it->fn(it);
            it = next;
        }
    }
}

int lab_tq_init(lab_tq_t *q, uv_loop_t *loop)
{
    q->head = q->tail = NULL;
    q->closed = 0;
    if (uv_mutex_init(&q->lock) != 0)
        return LAB_ENOMEM;
    q->async.data = q;
    if (uv_async_init(loop, &q->async, tq_drain) != 0) {
        uv_mutex_destroy(&q->lock);
        return LAB_EIO;
    }
    return LAB_OK;
}

void lab_tq_push(lab_tq_t *q, lab_tq_item_t *item)
{
    item->next = NULL;
    uv_mutex_lock(&q->lock);
    LAB_ASSERT(!q->closed);
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    uv_mutex_unlock(&q->lock);
    uv_async_send(&q->async);
}

void lab_tq_close(lab_tq_t *q, uv_close_cb cb)
{
    tq_drain(&q->async);
    uv_mutex_lock(&q->lock);
    q->closed = 1;
    uv_mutex_unlock(&q->lock);
    uv_close((uv_handle_t *)&q->async, cb);
}
