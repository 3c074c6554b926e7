/* Harness: mosquitto on a free loopback port with the project's broker config
 * (deploy/mosquitto.conf.in), and a recording subscriber on Paho's asynchronous client. */
#include "tests/harness/harness.h"

#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LAB_SOURCE_DIR
#define LAB_SOURCE_DIR "."
#endif

#define BROKERS_MAX 8
#define START_TIMEOUT_MS 10000

/* ---- the broker ---- */

/* Brokers still running at exit are killed; only by the process that started them (a forked
 * child inherits the atexit list but not the brokers). */
static h_mqtt_t *brokers[BROKERS_MAX];
static pid_t brokers_owner;

static void brokers_cleanup(void)
{
    if (getpid() != brokers_owner)
        return;
    for (int i = 0; i < BROKERS_MAX; i++)
        if (brokers[i])
            h_mqtt_destroy(brokers[i]);
}

static void broker_track(h_mqtt_t *mq)
{
    static bool registered;
    if (!registered) {
        brokers_owner = getpid();
        atexit(brokers_cleanup);
        registered = true;
    }
    for (int i = 0; i < BROKERS_MAX; i++)
        if (brokers[i] == mq)
            return;
    for (int i = 0; i < BROKERS_MAX; i++)
        if (!brokers[i]) {
            brokers[i] = mq;
            return;
        }
}

static void broker_untrack(h_mqtt_t *mq)
{
    for (int i = 0; i < BROKERS_MAX; i++)
        if (brokers[i] == mq)
            brokers[i] = NULL;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Writes text with every @NAME@ of the table replaced. */
static int write_filled(FILE *out, const char *text, const char *const (*vars)[2], int nvars)
{
    for (const char *p = text; *p;) {
        int hit = -1;
        for (int i = 0; i < nvars && hit < 0; i++)
            if (strncmp(p, vars[i][0], strlen(vars[i][0])) == 0)
                hit = i;
        if (hit >= 0) {
            fputs(vars[hit][1], out);
            p += strlen(vars[hit][0]);
        } else {
            fputc(*p++, out);
        }
    }
    return ferror(out) ? -1 : 0;
}

static int write_config(h_mqtt_t *mq)
{
    char tpl[512], conf[300], logf[300], port[16];
    snprintf(tpl, sizeof tpl, "%s/deploy/mosquitto.conf.in", LAB_SOURCE_DIR);
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", mq->dir);
    snprintf(logf, sizeof logf, "%s/mosquitto.log", mq->dir);
    snprintf(port, sizeof port, "%d", mq->port);
    char *text = read_file(tpl);
    if (!text) {
        fprintf(stderr, "harness: cannot read %s: %s\n", tpl, strerror(errno));
        return -1;
    }
    const char *const vars[][2] = {{"@PORT@", port}, {"@DIR@", mq->dir}};
    FILE *f = fopen(conf, "w");
    int rc = f ? write_filled(f, text, vars, 2) : -1;
    /* Started as root, mosquitto would switch to user "mosquitto", and a change of credentials
     * clears PR_SET_PDEATHSIG: a crashed test would leave its broker running. */
    if (f && geteuid() == 0)
        fputs("\n# added by the test harness (running as root)\nuser root\n", f);
    if (f && fclose(f) != 0)
        rc = -1;
    free(text);
    if (rc) {
        fprintf(stderr, "harness: cannot write %s\n", conf);
        return -1;
    }
    /* mosquitto started as root opens its log as user "mosquitto" */
    int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) {
        fchmod(fd, 0666);
        close(fd);
    }
    return 0;
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int broker_spawn(h_mqtt_t *mq)
{
    char conf[300], out[300];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", mq->dir);
    snprintf(out, sizeof out, "%s/mosquitto.out", mq->dir);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    mq->pid = pid;
    broker_track(mq);
    long long deadline = h_now_ms() + START_TIMEOUT_MS;
    while (h_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            mq->pid = 0;
            fprintf(stderr, "harness: mosquitto exited (status %d) at start; see %s and %s\n", st,
                    out, mq->dir);
            return -1;
        }
        if (port_open(mq->port))
            return 0;
        h_sleep_ms(20);
    }
    fprintf(stderr, "harness: mosquitto did not listen on port %d within %d ms\n", mq->port,
            START_TIMEOUT_MS);
    h_mqtt_stop(mq);
    return -1;
}

int h_mqtt_start(h_mqtt_t *mq)
{
    memset(mq, 0, sizeof *mq);
    if (h_tempdir("labloop-mqtt", mq->dir, sizeof mq->dir))
        return -1;
    mq->port = h_free_port();
    if (mq->port <= 0) {
        fprintf(stderr, "harness: no free port\n");
        return -1;
    }
    snprintf(mq->uri, sizeof mq->uri, "tcp://127.0.0.1:%d", mq->port);
    if (write_config(mq))
        return -1;
    return broker_spawn(mq);
}

int h_mqtt_stop(h_mqtt_t *mq)
{
    if (mq->pid <= 0)
        return 0;
    kill(mq->pid, SIGTERM);
    int st;
    long long deadline = h_now_ms() + START_TIMEOUT_MS;
    while (waitpid(mq->pid, &st, WNOHANG) == 0) {
        if (h_now_ms() > deadline) {
            kill(mq->pid, SIGKILL);
            waitpid(mq->pid, &st, 0);
            break;
        }
        h_sleep_ms(10);
    }
    mq->pid = 0;
    return 0;
}

int h_mqtt_restart(h_mqtt_t *mq)
{
    h_mqtt_stop(mq);
    /* The port was ours a moment ago; a TIME_WAIT or a late client may hold it briefly. */
    long long deadline = h_now_ms() + START_TIMEOUT_MS;
    while (port_open(mq->port) && h_now_ms() < deadline)
        h_sleep_ms(20);
    return broker_spawn(mq);
}

void h_mqtt_destroy(h_mqtt_t *mq)
{
    if (mq->pid > 0) {
        kill(mq->pid, SIGKILL);
        waitpid(mq->pid, NULL, 0);
        mq->pid = 0;
    }
    broker_untrack(mq);
    if (mq->dir[0] && !getenv("H_KEEP"))
        h_rmtree(mq->dir);
    mq->dir[0] = '\0';
}

/* ---- the recording subscriber ---- */

/* Paho's asynchronous library, the same one labloop links: Debian's Paho libraries are built with
 * heap tracking and export internal names (MQTTProperties_*, Thread_*), so paho-mqtt3c and
 * paho-mqtt3as in one process free each other's memory through the wrong heap. That crashed the
 * subscriber's thread here; one library per process avoids it. */
struct h_sub {
    MQTTAsync client;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    h_msg_t *msgs;
    int n, cap;
    h_msg_t *snap;
    int nsnap;
    atomic_int failed;
    char *filter;          /* subscribed again on every reconnect (durable subscribers) */
    atomic_int subscribed; /* subscriptions acknowledged */
};

static void sub_free_msgs(h_msg_t *v, int n)
{
    for (int i = 0; i < n; i++) {
        free(v[i].topic);
        free(v[i].payload);
    }
    free(v);
}

static int sub_arrived(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    h_sub_t *s = ctx;
    h_msg_t m = {0};
    m.topic = topic_len > 0 ? strndup(topic, (size_t)topic_len) : strdup(topic);
    m.payload = malloc((size_t)msg->payloadlen + 1);
    if (m.payload) {
        memcpy(m.payload, msg->payload, (size_t)msg->payloadlen);
        m.payload[msg->payloadlen] = '\0';
    }
    m.retained = msg->retained;
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    pthread_mutex_lock(&s->lock);
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        h_msg_t *v = realloc(s->msgs, (size_t)cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&s->lock);
            free(m.topic);
            free(m.payload);
            return 1;
        }
        s->msgs = v;
        s->cap = cap;
    }
    s->msgs[s->n++] = m;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 1;
}

static void sub_lost(void *ctx, char *cause)
{
    fprintf(stderr, "harness: subscriber lost its connection: %s\n", cause ? cause : "-");
}

static void sub_connect_failed(void *ctx, MQTTAsync_failureData *r)
{
    h_sub_t *s = ctx;
    atomic_store(&s->failed, r && r->code ? r->code : -1);
}

static void sub_acked(void *ctx, MQTTAsync_successData *r)
{
    h_sub_t *s = ctx;
    atomic_fetch_add(&s->subscribed, 1);
}

/* Paho's automatic reconnect, with a clean session: the subscription is made again here. A failed
 * subscribe is left to the next reconnect; the caller sees it in h_sub_subscribed. */
static void sub_reconnected(void *ctx, char *cause)
{
    h_sub_t *s = ctx;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = sub_acked;
    ro.context = s;
    if (MQTTAsync_subscribe(s->client, s->filter, 1, &ro) != MQTTASYNC_SUCCESS)
        fprintf(stderr, "harness: subscriber could not subscribe again to %s\n", s->filter);
}

/* Polls Paho's state: waiting on a flag set by a callback would need the same lock dance. */
static bool sub_wait_connected(h_sub_t *s, bool want)
{
    long long deadline = h_now_ms() + START_TIMEOUT_MS;
    while (h_now_ms() < deadline) {
        if ((MQTTAsync_isConnected(s->client) != 0) == want)
            return true;
        if (want && atomic_load(&s->failed))
            return false;
        h_sleep_ms(5);
    }
    return false;
}

static h_sub_t *sub_start(const char *uri, const char *filter, bool durable)
{
    static atomic_int counter;
    h_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    char id[64];
    snprintf(id, sizeof id, "h-sub-%d-%d", (int)getpid(), atomic_fetch_add(&counter, 1) + 1);
    int rc = MQTTAsync_create(&s->client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "harness: MQTTAsync_create %s: %d\n", uri, rc);
        s->client = NULL;
        goto fail;
    }
    MQTTAsync_setCallbacks(s->client, s, sub_lost, sub_arrived, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    if (durable) {
        s->filter = strdup(filter);
        co.automaticReconnect = 1;
        co.minRetryInterval = 1;
        co.maxRetryInterval = 1;
    }
    co.keepAliveInterval = 30;
    co.cleansession = 1;
    co.connectTimeout = 10;
    co.onFailure = sub_connect_failed;
    co.context = s;
    rc = MQTTAsync_connect(s->client, &co);
    if (rc != MQTTASYNC_SUCCESS || !sub_wait_connected(s, true)) {
        fprintf(stderr, "harness: subscriber connect %s: %d/%d\n", uri, rc,
                atomic_load(&s->failed));
        goto fail;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    rc = MQTTAsync_subscribe(s->client, filter, 1, &ro);
    if (rc == MQTTASYNC_SUCCESS)
        rc = MQTTAsync_waitForCompletion(s->client, ro.token, START_TIMEOUT_MS);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "harness: subscribe %s: %d\n", filter, rc);
        goto fail;
    }
    atomic_fetch_add(&s->subscribed, 1);
    /* Set only now: the first connect's subscription is the one above. */
    if (durable)
        MQTTAsync_setConnected(s->client, s, sub_reconnected);
    return s;
fail:
    if (s->client)
        MQTTAsync_destroy(&s->client);
    free(s->filter);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}

h_sub_t *h_sub_start(const char *uri, const char *filter)
{
    return sub_start(uri, filter, false);
}

h_sub_t *h_sub_start_durable(const char *uri, const char *filter)
{
    return sub_start(uri, filter, true);
}

int h_sub_subscribed(h_sub_t *s)
{
    return atomic_load(&s->subscribed);
}

int h_sub_wait(h_sub_t *s, int n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (s->n < n && pthread_cond_timedwait(&s->cond, &s->lock, &until) != ETIMEDOUT)
        ;
    int got = s->n;
    pthread_mutex_unlock(&s->lock);
    return got;
}

int h_sub_messages(h_sub_t *s, h_msg_t **msgs)
{
    pthread_mutex_lock(&s->lock);
    sub_free_msgs(s->snap, s->nsnap);
    s->snap = calloc((size_t)s->n + 1, sizeof *s->snap);
    s->nsnap = 0;
    for (int i = 0; s->snap && i < s->n; i++) {
        s->snap[i].topic = strdup(s->msgs[i].topic ? s->msgs[i].topic : "");
        s->snap[i].payload = strdup(s->msgs[i].payload ? s->msgs[i].payload : "");
        s->snap[i].retained = s->msgs[i].retained;
        s->nsnap++;
    }
    pthread_mutex_unlock(&s->lock);
    *msgs = s->snap;
    return s->nsnap;
}

void h_sub_stop(h_sub_t *s)
{
    if (!s)
        return;
    if (MQTTAsync_isConnected(s->client)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 1000;
        if (MQTTAsync_disconnect(s->client, &d) == MQTTASYNC_SUCCESS)
            sub_wait_connected(s, false);
    }
    MQTTAsync_destroy(&s->client);
    free(s->filter);
    sub_free_msgs(s->msgs, s->n);
    sub_free_msgs(s->snap, s->nsnap);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
