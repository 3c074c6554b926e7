/* Harness: an MQTT 5 requester (Paho's asynchronous client, as harness_mqtt.c explains):
 * publishes requests with a Response Topic, Correlation Data and user properties, and records
 * every answer with the Correlation Data it came back with. */
#include "tests/harness/harness.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

struct h_req {
    MQTTAsync client;
    pthread_mutex_t lock;
    h_answer_t *v;
    int n, cap;
    h_answer_t *snap;
    int nsnap;
    atomic_int failed;
};

static void answers_free(h_answer_t *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].topic);
        free(v[i].payload);
        free(v[i].corr);
    }
    free(v);
}

static int req_arrived(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    h_req_t *r = ctx;
    h_answer_t a = {0};
    a.topic = topic_len > 0 ? strndup(topic, (size_t)topic_len) : strdup(topic);
    a.payload = strndup(msg->payload, (size_t)msg->payloadlen);
    MQTTProperty *cd =
        MQTTProperties_getProperty(&msg->properties, MQTTPROPERTY_CODE_CORRELATION_DATA);
    if (cd)
        a.corr = strndup(cd->value.data.data, (size_t)cd->value.data.len);
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    pthread_mutex_lock(&r->lock);
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 256;
        h_answer_t *v = realloc(r->v, (size_t)cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&r->lock);
            free(a.topic);
            free(a.payload);
            free(a.corr);
            return 1;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = a;
    pthread_mutex_unlock(&r->lock);
    return 1;
}

static void req_connect_failed(void *ctx, MQTTAsync_failureData5 *f)
{
    h_req_t *r = ctx;
    atomic_store(&r->failed, f && f->code ? f->code : -1);
}

h_req_t *h_req_start(const char *uri, const char *filter)
{
    static atomic_int counter;
    h_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    char id[64];
    snprintf(id, sizeof id, "h-req-%d-%d", (int)getpid(), atomic_fetch_add(&counter, 1) + 1);
    MQTTAsync_createOptions co5 = MQTTAsync_createOptions_initializer5;
    int rc =
        MQTTAsync_createWithOptions(&r->client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co5);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "harness: requester create %s: %d\n", uri, rc);
        r->client = NULL;
        goto fail;
    }
    MQTTAsync_setCallbacks(r->client, r, NULL, req_arrived, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    co.keepAliveInterval = 30;
    co.cleanstart = 1;
    co.connectTimeout = 10;
    co.onFailure5 = req_connect_failed;
    co.context = r;
    rc = MQTTAsync_connect(r->client, &co);
    long long deadline = h_now_ms() + TIMEOUT_MS;
    while (rc == MQTTASYNC_SUCCESS && !MQTTAsync_isConnected(r->client) &&
           !atomic_load(&r->failed) && h_now_ms() < deadline)
        h_sleep_ms(5);
    if (!MQTTAsync_isConnected(r->client)) {
        fprintf(stderr, "harness: requester connect %s: %d/%d\n", uri, rc, atomic_load(&r->failed));
        goto fail;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    rc = MQTTAsync_subscribe(r->client, filter, 1, &ro);
    if (rc == MQTTASYNC_SUCCESS)
        rc = MQTTAsync_waitForCompletion(r->client, ro.token, TIMEOUT_MS);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "harness: requester subscribe %s: %d\n", filter, rc);
        goto fail;
    }
    return r;
fail:
    if (r->client)
        MQTTAsync_destroy(&r->client);
    pthread_mutex_destroy(&r->lock);
    free(r);
    return NULL;
}

int h_req_publish(h_req_t *r, const char *topic, const void *payload, size_t len,
                  const char *response_topic, const char *corr, const char *key, bool wait)
{
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)len;
    msg.qos = 1;
    MQTTProperty p;
    if (response_topic) {
        p.identifier = MQTTPROPERTY_CODE_RESPONSE_TOPIC;
        p.value.data.data = (char *)response_topic;
        p.value.data.len = (int)strlen(response_topic);
        MQTTProperties_add(&msg.properties, &p);
    }
    if (corr) {
        p.identifier = MQTTPROPERTY_CODE_CORRELATION_DATA;
        p.value.data.data = (char *)corr;
        p.value.data.len = (int)strlen(corr);
        MQTTProperties_add(&msg.properties, &p);
    }
    if (key) {
        p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
        p.value.data.data = "idempotency-key";
        p.value.data.len = (int)strlen("idempotency-key");
        p.value.value.data = (char *)key;
        p.value.value.len = (int)strlen(key);
        MQTTProperties_add(&msg.properties, &p);
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(r->client, topic, &msg, &ro);
    MQTTProperties_free(&msg.properties);
    if (rc == MQTTASYNC_SUCCESS && wait)
        rc = MQTTAsync_waitForCompletion(r->client, ro.token, TIMEOUT_MS);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "harness: requester publish %s: %d\n", topic, rc);
        return -1;
    }
    return 0;
}

int h_req_answers(h_req_t *r, h_answer_t **out)
{
    pthread_mutex_lock(&r->lock);
    answers_free(r->snap, r->nsnap);
    r->snap = calloc((size_t)r->n + 1, sizeof *r->snap);
    r->nsnap = 0;
    for (int i = 0; r->snap && i < r->n; i++) {
        r->snap[i].topic = strdup(r->v[i].topic);
        r->snap[i].payload = strdup(r->v[i].payload);
        r->snap[i].corr = r->v[i].corr ? strdup(r->v[i].corr) : NULL;
        r->nsnap++;
    }
    pthread_mutex_unlock(&r->lock);
    *out = r->snap;
    return r->nsnap;
}

int h_req_wait(h_req_t *r, int n, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        int have = r->n;
        pthread_mutex_unlock(&r->lock);
        if (have >= n || h_now_ms() >= deadline)
            return have;
        h_sleep_ms(5);
    }
}

json_t *h_req_answer(h_req_t *r, const char *corr, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    for (;;) {
        json_t *found = NULL;
        pthread_mutex_lock(&r->lock);
        for (int i = 0; i < r->n && !found; i++)
            if (r->v[i].corr && strcmp(r->v[i].corr, corr) == 0)
                found = json_loads(r->v[i].payload, 0, NULL);
        pthread_mutex_unlock(&r->lock);
        if (found || h_now_ms() >= deadline)
            return found;
        h_sleep_ms(5);
    }
}

void h_req_stop(h_req_t *r)
{
    if (!r)
        return;
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    d.timeout = 1000;
    MQTTAsync_disconnect(r->client, &d);
    long long deadline = h_now_ms() + 2000;
    while (MQTTAsync_isConnected(r->client) && h_now_ms() < deadline)
        h_sleep_ms(5);
    MQTTAsync_destroy(&r->client);
    answers_free(r->v, r->n);
    answers_free(r->snap, r->nsnap);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
