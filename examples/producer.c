/* Job step 1: writes COUNT objects of SIZE bytes under BUCKET/PREFIX, hands each to a gedsd (so that they outlive
 * this process) and exits. consumer.c, a later step, reads them.
 *   ./producer BUCKET PREFIX COUNT SIZE        (MDS: $GEDS_MDS) */
#include <geds.h>

#include <stdio.h>
#include <stdlib.h>

/* The bytes of object `index`: the consumer recomputes them. */
static void fill(unsigned char *bytes, size_t size, unsigned index) {
    for (size_t i = 0; i < size; i++) bytes[i] = (unsigned char)(i * 2654435761u >> 24 ^ index);
}

#define CHECK(call) do { if ((call) < 0) { \
    fprintf(stderr, "producer: %s: %s\n", #call, geds_last_error()); return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: producer BUCKET PREFIX COUNT SIZE\n"); return 2; }
    const char *bucket = argv[1], *prefix = argv[2];
    unsigned count = (unsigned)atoi(argv[3]);
    size_t size = strtoull(argv[4], NULL, 10);
    unsigned char *bytes = malloc(size ? size : 1);
    geds_t *g;
    CHECK(geds_connect(NULL, &g));
    CHECK(geds_create_bucket(g, bucket));
    for (unsigned i = 0; i < count; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s%u", prefix, i);
        fill(bytes, size, i);
        geds_writer_t *w;
        CHECK(geds_create(g, bucket, key, &w));
        CHECK(geds_write(w, bytes, size, 0));
        CHECK(geds_seal(w));
        CHECK(geds_relocate(g, bucket, key, NULL)); /* to the least loaded gedsd */
    }
    geds_close(g);
    free(bytes);
    printf("producer: wrote %u objects of %zu bytes\n", count, size);
    return 0;
}
