/*
 * sse.c - live event streams of fine-tune jobs (sse.h).
 *
 * Every stream is on the hub's list under hub.lock.  The content reader runs
 * on an HTTP thread; it frames new events into `pending` and hands them out
 * as the socket takes them.  `suspended` is only changed under the lock, by
 * the reader (suspending) and by a waker (resuming), so a connection is never
 * resumed twice or left suspended after an event: an event appended after the
 * reader looked is followed by a notify that takes the lock after it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sse.h"

typedef struct sse_stream {
    sse_hub *hub;
    struct MHD_Connection *conn;
    char id[32];
    jobs_cursor cursor;        /* the last event framed, and where it is in the file */
    char *pending;             /* framed, not yet handed to MHD */
    size_t pending_len, pending_off;
    bool suspended, ended;
    double last_write;         /* monotonic seconds */
    struct sse_stream *prev, *next;
} sse_stream;

struct sse_hub {
    jobs *jobs;
    pthread_mutex_t lock;
    pthread_cond_t tick;
    sse_stream *streams;
    int count;
    bool closing;              /* drain: every stream ends */
    bool stop;                 /* the ticker ends */
    pthread_t ticker;
    bool ticker_started;
};

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Resumes every suspended stream; under hub.lock. */
static void wake_all(sse_hub *h)
{
    for (sse_stream *s = h->streams; s; s = s->next)
        if (s->suspended) {
            s->suspended = false;
            MHD_resume_connection(s->conn);
        }
}

static void *ticker(void *arg)
{
    sse_hub *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_cond_timedwait(&h->tick, &h->lock, &until);
        wake_all(h); /* keep-alives, and a client that left is noticed on the write */
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

vit_status sse_hub_create(jobs *j, sse_hub **out, vit_error *err)
{
    *out = NULL;
    sse_hub *h = calloc(1, sizeof *h);
    if (!h)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    h->jobs = j;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->tick, NULL);
    int rc = pthread_create(&h->ticker, NULL, ticker, h);
    if (rc != 0) {
        sse_hub_free(h);
        return vit_error_set(err, VIT_ERR_IO, "cannot start the event-stream ticker");
    }
    h->ticker_started = true;
    *out = h;
    return VIT_OK;
}

void sse_hub_notify(sse_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    wake_all(h);
    pthread_mutex_unlock(&h->lock);
}

void sse_hub_close_streams(sse_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->closing = true;
    wake_all(h);
    pthread_mutex_unlock(&h->lock);
}

int sse_hub_streams(sse_hub *h)
{
    if (!h)
        return 0;
    pthread_mutex_lock(&h->lock);
    int n = h->count;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void sse_hub_free(sse_hub *h)
{
    if (!h)
        return;
    if (h->ticker_started) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        pthread_cond_signal(&h->tick);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->ticker, NULL);
    }
    pthread_cond_destroy(&h->tick);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Copies pending bytes out; under hub.lock. */
static ssize_t hand_out(sse_stream *s, char *buf, size_t max)
{
    size_t n = s->pending_len - s->pending_off;
    if (n > max)
        n = max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    if (s->pending_off == s->pending_len) {
        free(s->pending);
        s->pending = NULL;
        s->pending_len = s->pending_off = 0;
    }
    s->last_write = monotonic();
    return (ssize_t)n;
}

static ssize_t read_events(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_stream *s = cls;
    sse_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    ssize_t n = 0;
    if (s->pending) {
        n = hand_out(s, buf, max);
    } else if (s->ended || h->closing) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        char *frames = NULL;
        size_t len = 0;
        bool ended = false;
        vit_error err = {0};
        if (jobs_event_frames(h->jobs, s->id, &s->cursor, &frames, &len, &ended, &err) != VIT_OK) {
            n = MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (len > 0) {
            s->pending = frames;
            s->pending_len = len;
            s->ended = ended;
            n = hand_out(s, buf, max);
        } else if (ended) {
            free(frames);
            n = MHD_CONTENT_READER_END_OF_STREAM;
        } else if (monotonic() - s->last_write >= SSE_KEEPALIVE_S) {
            free(frames);
            static const char ka[] = ": keep-alive\n\n";
            size_t k = sizeof ka - 1 < max ? sizeof ka - 1 : max;
            memcpy(buf, ka, k);
            s->last_write = monotonic();
            n = (ssize_t)k;
        } else {
            free(frames);
            s->suspended = true; /* a notify or the ticker resumes it */
            MHD_suspend_connection(s->conn);
            n = 0;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void free_stream(void *cls)
{
    sse_stream *s = cls;
    sse_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->count--;
    pthread_mutex_unlock(&h->lock);
    free(s->pending);
    free(s);
}

enum MHD_Result sse_respond(sse_hub *h, struct MHD_Connection *conn, const char *id, long after,
                            const char *request_id, bool *full)
{
    *full = false;
    sse_stream *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->hub = h;
    s->conn = conn;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->cursor.after = after;
    s->last_write = monotonic();
    pthread_mutex_lock(&h->lock);
    if (h->count >= SSE_MAX_STREAMS || h->closing) {
        pthread_mutex_unlock(&h->lock);
        free(s);
        *full = true;
        return MHD_YES;
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->count++;
    pthread_mutex_unlock(&h->lock);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, read_events, s, free_stream);
    if (!resp) {
        free_stream(s);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                 "text/event-stream; charset=utf-8") == MHD_YES &&
                                 MHD_add_response_header(resp, "Cache-Control", "no-store") ==
                                     MHD_YES &&
                                 MHD_add_response_header(resp, "X-Request-Id", request_id) ==
                                     MHD_YES &&
                                 MHD_add_response_header(resp, "X-Accel-Buffering", "no") ==
                                     MHD_YES
                             ? MHD_queue_response(conn, MHD_HTTP_OK, resp)
                             : MHD_NO;
    MHD_destroy_response(resp); /* frees s (free_stream) when MHD is done with it */
    return ok;
}
