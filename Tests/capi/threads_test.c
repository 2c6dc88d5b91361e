/* 8 pthreads share one geds_t: each writes its objects, then all read every other thread's objects (whole, at
 * offsets, through views) and list the bucket at the same time, checking every byte.
 *   threads_test BUCKET        (MDS: $GEDS_MDS); exits with the number of failures. */
#define _POSIX_C_SOURCE 200809L
#include <geds.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 8, OBJECTS = 12 };
static geds_t *g;
static const char *bucket;
static pthread_barrier_t written;
static atomic_int failures;

static size_t size_of(int thread, int object) { return (size_t)((thread * 7919 + object * 104729) % 200000) + 1; }

static unsigned char byte_at(int thread, int object, size_t i) { return (unsigned char)(i * 31 + thread * 17 + object); }

static void fail(const char *what, int thread, int object) {
    fprintf(stderr, "FAIL thread %d object %d: %s (%s)\n", thread, object, what, geds_last_error());
    atomic_fetch_add(&failures, 1);
}

static void *run(void *argument) {
    int me = (int)(intptr_t)argument;
    char key[64];
    unsigned char *buffer = malloc(200001);
    for (int o = 0; o < OBJECTS; o++) {
        size_t size = size_of(me, o);
        for (size_t i = 0; i < size; i++) buffer[i] = byte_at(me, o, i);
        snprintf(key, sizeof key, "t%d/o%d", me, o);
        geds_writer_t *w;
        if (geds_create(g, bucket, key, &w) != 0) { fail("create", me, o); continue; }
        /* Two halves, the second first. */
        if (geds_write(w, buffer + size / 2, size - size / 2, size / 2) != 0 || geds_write(w, buffer, size / 2, 0) != 0 ||
            geds_seal(w) != 0) fail("write/seal", me, o);
    }
    pthread_barrier_wait(&written);
    for (int step = 1; step < THREADS; step++) {
        int other = (me + step) % THREADS;
        for (int o = 0; o < OBJECTS; o++) {
            size_t size = size_of(other, o);
            snprintf(key, sizeof key, "t%d/o%d", other, o);
            int64_t got = geds_read_object(g, bucket, key, buffer, 200001, 0);
            int good = got == (int64_t)size;
            for (size_t i = 0; good && i < size; i++) good = buffer[i] == byte_at(other, o, i);
            if (!good) fail("read_object", other, o);
            geds_reader_t *r;
            if (geds_open(g, bucket, key, &r) != 0) { fail("open", other, o); continue; }
            size_t offset = size / 3;
            got = geds_read(r, buffer, 1000, offset);
            good = got == (int64_t)(size - offset < 1000 ? size - offset : 1000);
            for (int64_t i = 0; good && i < got; i++) good = buffer[i] == byte_at(other, o, offset + (size_t)i);
            if (!good) fail("read at offset", other, o);
            geds_view_t *v;
            const unsigned char *data;
            uint64_t length;
            if (geds_view(r, &v, (const void **)&data, &length) != 0 || length != size) { fail("view", other, o); }
            else {
                for (size_t i = 0; good && i < size; i++) good = data[i] == byte_at(other, o, i);
                if (!good) fail("view bytes", other, o);
                geds_view_release(v);
            }
            geds_reader_close(r);
        }
        geds_iter_t *it;
        geds_entry_t entry;
        int listed = 0;
        char prefix[16];
        snprintf(prefix, sizeof prefix, "t%d/", other);
        if (geds_list(g, bucket, prefix, NULL, &it) != 0) { fail("list", other, -1); continue; }
        while (geds_next(it, &entry) == 1) listed++;
        geds_iter_close(it);
        if (listed != OBJECTS) fail("listed count", other, -1);
    }
    free(buffer);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: threads_test BUCKET\n"); return 2; }
    bucket = argv[1];
    if (geds_connect(NULL, &g) != 0 || geds_create_bucket(g, bucket) != 0) {
        fprintf(stderr, "threads_test: %s\n", geds_last_error());
        return 1;
    }
    pthread_barrier_init(&written, NULL, THREADS);
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, run, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    uint64_t deleted = 0;
    if (geds_delete_prefix(g, bucket, "t", &deleted) != 0 || deleted != THREADS * OBJECTS) {
        fprintf(stderr, "FAIL delete_prefix: %llu (%s)\n", (unsigned long long)deleted, geds_last_error());
        atomic_fetch_add(&failures, 1);
    }
    geds_close(g);
    printf("threads_test: %d threads x %d objects, %d failures\n", THREADS, OBJECTS, atomic_load(&failures));
    return atomic_load(&failures);
}
