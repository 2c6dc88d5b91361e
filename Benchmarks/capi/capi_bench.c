/* The C ABI's figures for docs/PERFORMANCE.md, measured like geds-perf measures the Swift API (compare.sh runs
 * both against one owner gedsd): remote read of a 256 MiB object into a caller buffer (open once, median of 3
 * after a warm-up), and 4 KiB gets (lookup + read in one call, and reads through an open reader: p50 of 3000
 * after 300 warm-ups). Objects are written here and relocated to the owner, so every read is remote.
 *   capi_bench OWNER        (MDS: $GEDS_MDS); one JSON object per figure on stdout */
#define _POSIX_C_SOURCE 200809L
#include <geds.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, compare);
    return values[n / 2];
}

#define CHECK(call) do { if ((call) < 0) { fprintf(stderr, "capi_bench: %s: %s\n", #call, geds_last_error()); exit(1); } } while (0)

static void place(geds_t *g, const char *bucket, const char *key, size_t size, const char *owner) {
    unsigned char *bytes = malloc(size);
    for (size_t i = 0; i < size; i++) bytes[i] = (unsigned char)(i * 7 + 3);
    geds_writer_t *w;
    CHECK(geds_create(g, bucket, key, &w));
    CHECK(geds_write(w, bytes, size, 0));
    CHECK(geds_seal(w));
    CHECK(geds_relocate(g, bucket, key, owner));
    free(bytes);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: capi_bench OWNER\n"); return 2; }
    const char *owner = argv[1];
    geds_config_t config;
    geds_config_init(&config);
    config.host_id = "capi-bench-reader";
    config.transport = "tcp";
    geds_t *g;
    CHECK(geds_connect_config(&config, &g));
    char bucket[64];
    snprintf(bucket, sizeof bucket, "capi-bench-%d", (int)getpid());
    CHECK(geds_create_bucket(g, bucket));

    /* 256 MiB remote read into a caller buffer. */
    size_t large = (size_t)256 << 20;
    place(g, bucket, "large", large, owner);
    geds_reader_t *r;
    CHECK(geds_open(g, bucket, "large", &r));
    unsigned char *buffer = calloc(1, large);
    double rates[3];
    for (int sample = -1; sample < 3; sample++) {
        double start = now();
        int64_t got = geds_read(r, buffer, large, 0);
        double seconds = now() - start;
        if (got != (int64_t)large) { fprintf(stderr, "capi_bench: short read %lld\n", (long long)got); return 1; }
        if (sample >= 0) rates[sample] = (double)large * 8 / seconds / 1e9;
    }
    geds_reader_close(r);
    free(buffer);
    printf("{\"workload\": \"read-bw\", \"size_bytes\": %zu, \"gbit_per_s\": %.3f}\n", large, median(rates, 3));

    /* 4 KiB gets. */
    enum { WARMUPS = 300, SAMPLES = 3000 };
    static double micros[SAMPLES];
    unsigned char small[4096];
    place(g, bucket, "small", sizeof small, owner);
    for (int i = -WARMUPS; i < SAMPLES; i++) {
        double start = now();
        if (geds_read_object(g, bucket, "small", small, sizeof small, 0) != (int64_t)sizeof small) return 1;
        if (i >= 0) micros[i] = (now() - start) * 1e6;
    }
    printf("{\"workload\": \"latency\", \"size_bytes\": 4096, \"path\": \"lookup+read\", \"p50_us\": %.2f}\n",
           median(micros, SAMPLES));
    CHECK(geds_open(g, bucket, "small", &r));
    for (int i = -WARMUPS; i < SAMPLES; i++) {
        double start = now();
        if (geds_read(r, small, sizeof small, 0) != (int64_t)sizeof small) return 1;
        if (i >= 0) micros[i] = (now() - start) * 1e6;
    }
    geds_reader_close(r);
    printf("{\"workload\": \"latency\", \"size_bytes\": 4096, \"path\": \"cached\", \"p50_us\": %.2f}\n",
           median(micros, SAMPLES));
    CHECK(geds_delete_bucket(g, bucket, 1));
    geds_close(g);
    return 0;
}
