/* Job step 2: reads the COUNT objects producer.c left under BUCKET/PREFIX and checks every byte.
 *   ./consumer BUCKET PREFIX COUNT SIZE        (MDS: $GEDS_MDS) */
#include <geds.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(unsigned char *bytes, size_t size, unsigned index) {
    for (size_t i = 0; i < size; i++) bytes[i] = (unsigned char)(i * 2654435761u >> 24 ^ index);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: consumer BUCKET PREFIX COUNT SIZE\n"); return 2; }
    const char *bucket = argv[1], *prefix = argv[2];
    unsigned count = (unsigned)atoi(argv[3]);
    size_t size = strtoull(argv[4], NULL, 10);
    unsigned char *expected = malloc(size + 1), *got = malloc(size + 1);
    geds_t *g;
    if (geds_connect(NULL, &g) < 0) { fprintf(stderr, "consumer: %s\n", geds_last_error()); return 1; }
    unsigned good = 0;
    for (unsigned i = 0; i < count; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s%u", prefix, i);
        fill(expected, size, i);
        int64_t n = geds_read_object(g, bucket, key, got, size + 1, 0);
        if (n < 0) fprintf(stderr, "consumer: %s: %s\n", key, geds_last_error());
        else if ((size_t)n != size || memcmp(got, expected, size) != 0) fprintf(stderr, "consumer: %s: wrong bytes\n", key);
        else good++;
    }
    geds_close(g);
    free(expected);
    free(got);
    printf("consumer: %u of %u objects intact\n", good, count);
    return good == count ? 0 : 1;
}
