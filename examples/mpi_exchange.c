/* Each MPI rank writes an object, all wait at a barrier, then each reads its neighbour's object and checks its
 * bytes. With --bench it also times the same exchange through MPI_Sendrecv in this run and prints the ratio.
 *
 *   mpirun -np 4 ./mpi_exchange [--size BYTES] [--ranks-per-host N] [--bench ROUNDS] [--bucket NAME] [--view 1]
 *
 * --view 1 reads the neighbour's object through a zero-copy view (geds_view) instead of into a buffer.
 * The MDS is $GEDS_MDS. --ranks-per-host N gives ranks rank/N different host ids (simulated hosts: ranks on
 * different ones read over the network, ranks on one map each other's memory). */
#include <geds.h>
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(unsigned char *bytes, size_t size, int rank) {
    uint64_t state = 0x9E3779B97F4A7C15ull * (uint64_t)(rank + 1);
    for (size_t i = 0; i < size; i += 8) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        memcpy(bytes + i, &state, size - i < 8 ? size - i : 8);
    }
}

static void check(int rc, const char *what, int rank) {
    if (rc < 0) {
        fprintf(stderr, "rank %d: %s failed: %s (%s)\n", rank, what, geds_last_error(), geds_strerror(rc));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    size_t size = 1 << 20;
    int per_host = 0, rounds = 0, use_view = 0;
    const char *bucket = "mpi-exchange";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--size") == 0) size = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--ranks-per-host") == 0) per_host = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--bench") == 0) rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--bucket") == 0) bucket = argv[i + 1];
        else if (strcmp(argv[i], "--view") == 0) use_view = atoi(argv[i + 1]);
    }

    geds_config_t config;
    geds_config_init(&config);
    char host[64];
    if (per_host > 0) {
        snprintf(host, sizeof host, "sim-host-%d", rank / per_host);
        config.host_id = host;
    }
    geds_t *g;
    check(geds_connect_config(&config, &g), "geds_connect", rank);
    check(geds_create_bucket(g, bucket), "geds_create_bucket", rank);

    unsigned char *mine = malloc(size), *theirs = malloc(size), *expected = malloc(size);
    int right = (rank + 1) % ranks, left = (rank + ranks - 1) % ranks;
    fill(mine, size, rank);
    fill(expected, size, right);

    /* The exchange: write and seal mine, barrier, read my right neighbour's. */
    char key[64], other[64];
    int failures = 0;
    double geds_seconds = 0, mpi_seconds = 0;
    for (int round = 0; round <= rounds; round++) {
        snprintf(key, sizeof key, "round-%d/rank-%d", round, rank);
        snprintf(other, sizeof other, "round-%d/rank-%d", round, right);
        memset(theirs, 0, size);
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        geds_writer_t *w;
        check(geds_create(g, bucket, key, &w), "geds_create", rank);
        check(geds_write(w, mine, size, 0), "geds_write", rank);
        check(geds_seal(w), "geds_seal", rank);
        MPI_Barrier(MPI_COMM_WORLD);
        geds_reader_t *r;
        check(geds_open(g, bucket, other, &r), "geds_open", rank);
        int64_t got;
        geds_view_t *view = NULL;
        const unsigned char *bytes = theirs;
        if (use_view) {
            uint64_t length = 0;
            check(geds_view(r, &view, (const void **)&bytes, &length), "geds_view", rank);
            got = (int64_t)length;
        } else {
            got = geds_read(r, theirs, size, 0);
            check((int)(got < 0 ? got : 0), "geds_read", rank);
        }
        geds_reader_close(r);
        MPI_Barrier(MPI_COMM_WORLD);
        if (round > 0) geds_seconds += MPI_Wtime() - start;
        if ((size_t)got != size || memcmp(bytes, expected, size) != 0) failures++;
        if (view) geds_view_release(view);
        MPI_Barrier(MPI_COMM_WORLD); /* the neighbour has read my object: now it may go */
        check(geds_delete(g, bucket, key), "geds_delete", rank);
    }
    for (int round = 1; round <= rounds; round++) {
        memset(theirs, 0, size);
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        /* Send mine to the left neighbour (whose right neighbour I am), receive from the right. */
        MPI_Sendrecv(mine, (int)size, MPI_BYTE, left, 0, theirs, (int)size, MPI_BYTE, right, 0, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        MPI_Barrier(MPI_COMM_WORLD);
        mpi_seconds += MPI_Wtime() - start;
        if (memcmp(theirs, expected, size) != 0) failures++;
    }

    int total = 0;
    MPI_Reduce(&failures, &total, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("mpi_exchange: %d ranks, %zu bytes each, %s, %s: %s\n", ranks, size,
               per_host > 0 ? "simulated hosts" : "one host id", use_view ? "views" : "reads into a buffer",
               total == 0 ? "OK" : "BYTES DIFFER");
        if (rounds > 0) {
            double gb = (double)size * ranks * rounds / 1e9;
            printf("exchange geds %.3f GB/s, MPI_Sendrecv %.3f GB/s, ratio geds/mpi %.2f (%d rounds)\n",
                   gb / geds_seconds, gb / mpi_seconds, mpi_seconds / geds_seconds, rounds);
        }
    }
    geds_close(g);
    free(mine); free(theirs); free(expected);
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
