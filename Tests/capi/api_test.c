/* Calls every function of geds.h with good and bad input against a real MDS and gedsd ($GEDS_MDS):
 *   api_test BUCKET
 * Prints one line per failed check and exits with the number of failures. */
#define _POSIX_C_SOURCE 200809L /* poll() under -std=c99 */
#include <geds.h>

#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond) do { if (!(cond)) { failures++; \
    fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, geds_last_error()); } } while (0)
/* A call expected to fail with `code` and leave a message behind. */
#define EXPECT(code, call) do { long long got_ = (long long)(call); if (got_ != (code)) { failures++; \
    fprintf(stderr, "FAIL %s:%d: %s returned %lld, expected %s (last error: %s)\n", __FILE__, __LINE__, #call, got_, \
            #code, geds_last_error()); } else if (code != 0 && geds_last_error()[0] == '\0') { failures++; \
    fprintf(stderr, "FAIL %s:%d: %s left no message\n", __FILE__, __LINE__, #call); } } while (0)

static void fill(unsigned char *bytes, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) bytes[i] = (unsigned char)((i * 131u + seed * 7u) >> 3);
}

static int count_entries(geds_iter_t *it, int kind, const char *name) {
    geds_entry_t entry;
    int n = 0, rc;
    while ((rc = geds_next(it, &entry)) == 1) {
        if (entry.kind == kind && (name == NULL || strcmp(entry.name, name) == 0)) n++;
    }
    CHECK(rc == 0);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: api_test BUCKET\n"); return 2; }
    const char *bucket = argv[1];

    /* The library itself. */
    CHECK(strstr(geds_version(), "GEDS") != NULL);
    CHECK(geds_abi_version() == GEDS_ABI_VERSION);
    CHECK(strstr(geds_strerror(GEDS_E_NO_SUCH_BUCKET), "GEDS_E_NO_SUCH_BUCKET") != NULL);
    CHECK(strstr(geds_strerror(GEDS_E_S3_DELETION_PENDING), "GEDS_E_S3_DELETION_PENDING") != NULL);
    CHECK(strstr(geds_strerror(GEDS_E_SUBSCRIBER_TOO_SLOW), "GEDS_E_SUBSCRIBER_TOO_SLOW") != NULL);
    CHECK(strstr(geds_strerror(GEDS_E_AUTHENTICATION_FAILED), "GEDS_E_AUTHENTICATION_FAILED") != NULL);
    for (int code = GEDS_E_AUTHENTICATION_FAILED; code <= GEDS_OK; code++) CHECK(strlen(geds_strerror(code)) > 10);
    CHECK(strstr(geds_strerror(-999), "unknown") != NULL);
    CHECK(strstr(geds_strerror(7), "unknown") != NULL);

    /* Connecting: bad input. */
    geds_t *g = NULL;
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_connect(NULL, NULL));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_connect("no-port-here", &g));
    CHECK(g == NULL);
    geds_config_t config;
    geds_config_init(&config);
    config.transport = "carrier-pigeon";
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_connect_config(&config, &g));
    CHECK(strstr(geds_last_error(), "carrier-pigeon") != NULL);
    geds_config_init(&config);
    config.persistency = "forever";
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_connect_config(&config, &g));
    geds_config_init(&config);
    config.mds = "127.0.0.1:1";
    config.timeout_ms = 500;
    EXPECT(GEDS_E_MDS_UNREACHABLE, geds_connect_config(&config, &g));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_connect_config(NULL, &g));
    geds_config_init(NULL); /* harmless */

    /* Connecting: $GEDS_MDS, then with a configuration. */
    CHECK(geds_connect(NULL, &g) == 0 && g != NULL);
    geds_close(g);
    geds_close(g); /* double close: only an error message */
    CHECK(strstr(geds_last_error(), "not an open geds_t") != NULL);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create_bucket(g, bucket)); /* use after close */
    geds_close(NULL);
    geds_config_init(&config);
    config.transport = "tcp";
    config.name = "api-test";
    config.host_id = "host-api-test";
    config.timeout_ms = 5000;
    CHECK(geds_connect_config(&config, &g) == 0);

    /* Buckets. */
    EXPECT(0, geds_create_bucket(g, bucket));
    EXPECT(0, geds_create_bucket(g, bucket)); /* exists: not an error */
    EXPECT(GEDS_E_INVALID_NAME, geds_create_bucket(g, "Bad_Bucket!"));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create_bucket(g, NULL));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create_bucket(NULL, bucket));
    EXPECT(GEDS_E_INVALID_NAME, geds_create_bucket(g, "\xff\xfe"));
    geds_iter_t *it = NULL;
    CHECK(geds_list_buckets(g, &it) == 0);
    CHECK(count_entries(it, GEDS_ENTRY_BUCKET, bucket) == 1);
    geds_iter_close(it);
    geds_iter_close(it); /* double close */
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_list_buckets(g, NULL));

    /* Writing. */
    enum { SIZE = 300000 };
    unsigned char *data = malloc(SIZE), *back = malloc(SIZE + 100);
    fill(data, SIZE, 1);
    geds_writer_t *w = NULL;
    EXPECT(GEDS_E_NO_SUCH_BUCKET, geds_create(g, "no-such-bucket-here", "k", &w));
    CHECK(strstr(geds_last_error(), "no such bucket") != NULL);
    EXPECT(GEDS_E_INVALID_NAME, geds_create(g, bucket, "", &w));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create(g, bucket, NULL, &w));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create(g, bucket, "k", NULL));
    CHECK(geds_create(g, bucket, "dir/a", &w) == 0);
    EXPECT(0, geds_write(w, data + 1000, SIZE - 1000, 1000)); /* out of order */
    EXPECT(0, geds_write(w, data, 1000, 0));
    EXPECT(0, geds_write(w, NULL, 0, 5));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_write(w, NULL, 10, 0));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_write(NULL, data, 10, 0));
    CHECK(geds_write(w, data, 10, UINT64_MAX - 5) < 0);   /* past any file size: an error, not a crash */
    CHECK(geds_truncate(w, UINT64_MAX) < 0);
    CHECK(geds_write(w, data, SIZE_MAX, 0) < 0);
    uint64_t size = 0;
    CHECK(geds_writer_size(w, &size) == 0 && size == SIZE);
    EXPECT(0, geds_write(w, data, 10, SIZE + 50));
    EXPECT(0, geds_truncate(w, SIZE));
    CHECK(geds_writer_size(w, &size) == 0 && size == SIZE);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_writer_size(w, NULL));
    const char *names[] = {"kind", "rank"}, *values[] = {"test", "0"};
    EXPECT(0, geds_seal_metadata(w, names, values, 2));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_seal(w)); /* the writer is gone */
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_write(w, data, 1, 0));
    geds_writer_discard(w); /* harmless */

    /* Create-if-absent: refused while the key is bound; a free key is created as by geds_create. */
    EXPECT(GEDS_E_OBJECT_EXISTS, geds_create_flags(g, bucket, "dir/a", GEDS_CREATE_EXCLUSIVE, &w));
    CHECK(geds_create_flags(g, bucket, "discarded", GEDS_CREATE_EXCLUSIVE, &w) == 0);
    EXPECT(0, geds_write(w, data, 100, 0));
    geds_writer_discard(w);
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_stat(g, bucket, "discarded", &(geds_stat_t){0}));

    /* Replicas: this process's copy and a gedsd's on another host; more copies than hosts is refused at the seal. */
    CHECK(geds_create_flags(g, bucket, "replicated", GEDS_CREATE_REPLICAS(2), &w) == 0);
    EXPECT(0, geds_write(w, data, 4096, 0));
    EXPECT(0, geds_seal(w));
    geds_stat_t replicated = {0};
    CHECK(geds_stat(g, bucket, "replicated", &replicated) == 0 && replicated.locations == 2);
    EXPECT(0, geds_delete(g, bucket, "replicated"));
    CHECK(geds_create_flags(g, bucket, "too-many-copies", GEDS_CREATE_REPLICAS(16), &w) == 0);
    EXPECT(0, geds_write(w, data, 4096, 0));
    EXPECT(GEDS_E_NO_SUCH_NODE, geds_seal(w));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_stat(g, bucket, "too-many-copies", &(geds_stat_t){0}));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create_flags(g, bucket, "k", GEDS_CREATE_REPLICAS(17), &w));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_create_flags(g, bucket, "k", 1u << 16, &w));

    /* One-call puts: the bytes read back are those written; the errors are geds_create's and geds_seal's. */
    EXPECT(0, geds_put(g, bucket, "put/small", data + 3, 4096));
    memset(back, 0, SIZE);
    CHECK(geds_read_object(g, bucket, "put/small", back, SIZE, 0) == 4096 && memcmp(back, data + 3, 4096) == 0);
    EXPECT(0, geds_put(g, bucket, "put/large", data, SIZE));
    CHECK(geds_read_object(g, bucket, "put/large", back, SIZE, 0) == SIZE && memcmp(back, data, SIZE) == 0);
    EXPECT(0, geds_put(g, bucket, "put/empty", NULL, 0));
    geds_stat_t put_stat = {0};
    CHECK(geds_stat(g, bucket, "put/empty", &put_stat) == 0 && put_stat.size == 0);
    EXPECT(GEDS_E_OBJECT_EXISTS, geds_put_flags(g, bucket, "put/small", data, 10, GEDS_CREATE_EXCLUSIVE, NULL, NULL, 0));
    CHECK(geds_read_object(g, bucket, "put/small", back, SIZE, 0) == 4096 && memcmp(back, data + 3, 4096) == 0);
    EXPECT(0, geds_put_flags(g, bucket, "put/meta", data + 1, 100, GEDS_CREATE_EXCLUSIVE, names, values, 2));
    CHECK(geds_stat(g, bucket, "put/meta", &put_stat) == 0 && put_stat.size == 100 && put_stat.metadata_count == 2);
    CHECK(geds_read_object(g, bucket, "put/meta", back, SIZE, 0) == 100 && memcmp(back, data + 1, 100) == 0);
    EXPECT(GEDS_E_NO_SUCH_BUCKET, geds_put(g, "no-such-bucket-here", "k", data, 10));
    EXPECT(GEDS_E_INVALID_NAME, geds_put(g, bucket, "", data, 10));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_put(g, bucket, "k", NULL, 10));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_put(NULL, bucket, "k", data, 10));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_put_flags(g, bucket, "k", data, 10, 1u << 16, NULL, NULL, 0));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_put_flags(g, bucket, "k", data, 10, 0, NULL, values, 1));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_stat(g, bucket, "k", &put_stat));
    uint64_t put_deleted = 0;
    CHECK(geds_delete_prefix(g, bucket, "put/", &put_deleted) == 0 && put_deleted == 4);

    const char *more[] = {"dir/b", "dir/sub/c", "top"};
    for (int i = 0; i < 3; i++) {
        CHECK(geds_create(g, bucket, more[i], &w) == 0);
        EXPECT(0, geds_write(w, data, 4096, 0));
        EXPECT(0, geds_seal(w));
    }
    CHECK(geds_create(g, bucket, "badmeta", &w) == 0);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_seal_metadata(w, NULL, values, 1));

    /* Reading. */
    geds_reader_t *r = NULL;
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_open(g, bucket, "missing", &r));
    EXPECT(GEDS_E_NO_SUCH_BUCKET, geds_open(g, "no-such-bucket-here", "k", &r));
    CHECK(geds_open(g, bucket, "dir/a", &r) == 0);
    CHECK(geds_reader_size(r, &size) == 0 && size == SIZE);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_reader_size(r, NULL));
    memset(back, 0, SIZE);
    CHECK(geds_read(r, back, SIZE + 100, 0) == SIZE);
    CHECK(memcmp(back, data, SIZE) == 0);
    CHECK(geds_read(r, back, 100, SIZE - 10) == 10);          /* up to the end */
    CHECK(memcmp(back, data + SIZE - 10, 10) == 0);
    CHECK(geds_read(r, back, 100, SIZE) == 0);                /* at the end */
    CHECK(geds_read(r, back, 100, (uint64_t)SIZE * 10) == 0); /* past the end */
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_read(r, NULL, 100, 0));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_read(NULL, back, 100, 0));
    CHECK(geds_read(r, back, SIZE_MAX, 0) < 0);
    CHECK(geds_read_object(g, bucket, "dir/a", back, 10, UINT64_MAX) == 0);
    CHECK(geds_read_object(g, bucket, "dir/a", back, 5000, 777) == 5000);
    CHECK(memcmp(back, data + 777, 5000) == 0);
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_read_object(g, bucket, "missing", back, 10, 0));

    /* A zero-copy view outlives the object's deletion. */
    geds_view_t *view = NULL;
    const void *bytes = NULL;
    CHECK(geds_view(r, &view, &bytes, &size) == 0 && size == SIZE && bytes != NULL);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_view(r, NULL, &bytes, &size));
    geds_reader_close(r);
    geds_reader_close(r); /* double close */
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_read(r, back, 1, 0));
    geds_stat_t st;
    CHECK(geds_stat(g, bucket, "dir/a", &st) == 0 && st.size == SIZE && st.metadata_count == 2 && st.locations >= 1);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_stat(g, bucket, "dir/a", NULL));
    EXPECT(0, geds_copy(g, bucket, "dir/a", bucket, "copy-of-a"));
    EXPECT(0, geds_delete(g, bucket, "dir/a"));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_delete(g, bucket, "dir/a"));
    CHECK(memcmp(bytes, data, SIZE) == 0);
    geds_view_release(view);
    geds_view_release(view); /* double release */
    CHECK(geds_read_object(g, bucket, "copy-of-a", back, SIZE, 0) == SIZE && memcmp(back, data, SIZE) == 0);

    /* Metadata. */
    char value[16];
    CHECK(geds_metadata_get(g, bucket, "copy-of-a", "kind", value, sizeof value) == 4 && strcmp(value, "test") == 0);
    CHECK(geds_metadata_get(g, bucket, "copy-of-a", "kind", value, 3) == 4 && strcmp(value, "te") == 0);
    CHECK(geds_metadata_get(g, bucket, "copy-of-a", "kind", NULL, 0) == 4);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_metadata_get(g, bucket, "copy-of-a", "absent", value, sizeof value));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_metadata_get(g, bucket, "missing", "kind", value, sizeof value));
    const char *new_names[] = {"owner"}, *new_values[] = {"fortran"};
    EXPECT(0, geds_metadata_set(g, bucket, "copy-of-a", new_names, new_values, 1));
    CHECK(geds_metadata_list(g, bucket, "copy-of-a", &it) == 0);
    geds_entry_t entry;
    CHECK(geds_next(it, &entry) == 1 && entry.kind == GEDS_ENTRY_METADATA && strcmp(entry.name, "owner") == 0 &&
          strcmp(entry.detail, "fortran") == 0);
    CHECK(geds_next(it, &entry) == 0);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_next(it, NULL));
    geds_iter_close(it);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_next(it, &entry));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_metadata_set(g, bucket, "copy-of-a", NULL, NULL, 1));

    /* Listing with prefix and delimiter. */
    CHECK(geds_list(g, bucket, "dir/", "/", &it) == 0);
    CHECK(geds_next(it, &entry) == 1 && entry.kind == GEDS_ENTRY_OBJECT && strcmp(entry.name, "dir/b") == 0 &&
          entry.size == 4096);
    CHECK(geds_next(it, &entry) == 1 && entry.kind == GEDS_ENTRY_PREFIX && strcmp(entry.name, "dir/sub/") == 0);
    CHECK(geds_next(it, &entry) == 0);
    geds_iter_close(it);
    CHECK(geds_list(g, bucket, NULL, NULL, &it) == 0);
    CHECK(count_entries(it, GEDS_ENTRY_OBJECT, NULL) == 4); /* copy-of-a dir/b dir/sub/c top */
    geds_iter_close(it);
    EXPECT(GEDS_E_NO_SUCH_BUCKET, geds_list(g, "no-such-bucket-here", NULL, NULL, &it));

    /* Rename, locations, relocation, delete by prefix. */
    EXPECT(0, geds_rename(g, bucket, "top", bucket, "renamed"));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_stat(g, bucket, "top", &st));
    EXPECT(GEDS_E_NO_SUCH_OBJECT, geds_rename(g, bucket, "top", bucket, "again"));
    EXPECT(GEDS_E_INVALID_NAME, geds_copy(g, bucket, "renamed", "Bad_Bucket!", "x"));
    CHECK(geds_locations(g, bucket, "renamed", &it) == 0);
    CHECK(count_entries(it, GEDS_ENTRY_LOCATION, "api-test") == 1);
    geds_iter_close(it);
    EXPECT(0, geds_relocate(g, bucket, "renamed", NULL));
    CHECK(geds_locations(g, bucket, "renamed", &it) == 0);
    CHECK(count_entries(it, GEDS_ENTRY_LOCATION, "api-test") == 0);
    geds_iter_close(it);
    EXPECT(GEDS_E_NO_SUCH_NODE, geds_relocate(g, bucket, "renamed", "no-such-node"));
    CHECK(geds_read_object(g, bucket, "renamed", back, 4096, 0) == 4096 && memcmp(back, data, 4096) == 0);
    EXPECT(0, geds_flush(g, 10000));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_set_bucket_storage(g, bucket, "http://127.0.0.1:1/s3bucket", NULL, NULL, "forever"));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_set_bucket_storage(g, bucket, "no scheme here", NULL, NULL, NULL));
    EXPECT(GEDS_E_INVALID_NAME, geds_set_bucket_storage(g, "Bad_Bucket!", NULL, NULL, NULL, NULL));
    EXPECT(0, geds_set_bucket_storage(g, bucket, "http://127.0.0.1:1/s3bucket/run", NULL, "eu-west-1", "ephemeral"));
    EXPECT(0, geds_set_bucket_storage(g, bucket, NULL, NULL, NULL, NULL)); /* taken away again */

    /* Pub/sub: the changes under a prefix in order, the descriptor for poll, resuming after a revision, wait. */
    geds_subscription_t *sub = NULL;
    geds_event_t event;
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscribe(g, 9, bucket, NULL, NULL, &sub));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscribe(g, GEDS_SCOPE_KEY, bucket, NULL, NULL, &sub));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscribe(NULL, GEDS_SCOPE_BUCKET, bucket, NULL, NULL, &sub));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscribe(g, GEDS_SCOPE_BUCKET, bucket, NULL, NULL, NULL));
    EXPECT(GEDS_E_INVALID_NAME, geds_subscribe(g, GEDS_SCOPE_BUCKET, "Bad_Bucket!", NULL, NULL, &sub));
    EXPECT(0, geds_subscribe(g, GEDS_SCOPE_PREFIX, bucket, "events/", NULL, &sub));
    int fd = geds_subscription_fd(sub);
    CHECK(fd >= 0);
    EXPECT(0, geds_next_event(sub, 0, &event)); /* nothing yet */
    EXPECT(GEDS_E_TIMED_OUT, geds_wait(g, bucket, "events/one", 200));
    EXPECT(GEDS_E_INVALID_NAME, geds_wait(g, bucket, "", 200));
    CHECK(geds_create(g, bucket, "events/one", &w) == 0);
    EXPECT(0, geds_write(w, data, 100, 0));
    EXPECT(0, geds_seal(w));
    struct pollfd readable = { fd, POLLIN, 0 };
    CHECK(poll(&readable, 1, 10000) == 1);
    CHECK(geds_next_event(sub, 10000, &event) == 1);
    CHECK(event.kind == GEDS_EVENT_CREATED && strcmp(event.bucket, bucket) == 0 && strcmp(event.key, "events/one") == 0);
    CHECK(strcmp(event.source_key, "") == 0);
    uint64_t created = event.revision;
    EXPECT(0, geds_wait(g, bucket, "events/one", 1000)); /* it exists: at once */
    EXPECT(0, geds_rename(g, bucket, "events/one", bucket, "events/two"));
    CHECK(geds_next_event(sub, 10000, &event) == 1);
    CHECK(event.kind == GEDS_EVENT_RENAMED && strcmp(event.key, "events/two") == 0);
    CHECK(strcmp(event.source_bucket, bucket) == 0 && strcmp(event.source_key, "events/one") == 0);
    CHECK(event.revision > created);
    uint64_t revision = 0;
    EXPECT(0, geds_subscription_revision(sub, &revision));
    CHECK(revision == event.revision);
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscription_revision(sub, NULL));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_next_event(sub, 0, NULL));
    geds_subscription_close(sub);
    geds_subscription_close(sub); /* second close: only an error message */
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_next_event(sub, 0, &event));
    EXPECT(GEDS_E_INVALID_ARGUMENT, geds_subscription_fd(sub));
    EXPECT(0, geds_subscribe(g, GEDS_SCOPE_KEY, bucket, "events/two", &created, &sub)); /* replayed from history */
    CHECK(geds_next_event(sub, 10000, &event) == 1 && event.kind == GEDS_EVENT_RENAMED && event.revision == revision);
    geds_subscription_close(sub);
    EXPECT(0, geds_delete(g, bucket, "events/two"));

    EXPECT(GEDS_E_BUCKET_NOT_EMPTY, geds_delete_bucket(g, bucket, 0));
    uint64_t deleted = 0;
    EXPECT(0, geds_delete_prefix(g, bucket, "dir/", &deleted));
    CHECK(deleted == 2);
    EXPECT(0, geds_delete_prefix(g, bucket, "nothing/", NULL));
    EXPECT(0, geds_delete_bucket(g, bucket, 1));
    EXPECT(GEDS_E_NO_SUCH_BUCKET, geds_delete_bucket(g, bucket, 0));

    geds_close(g);

    /* A reader or writer that outlives its connection fails cleanly. */
    config.name = "api-test-after-close";
    CHECK(geds_connect_config(&config, &g) == 0);
    EXPECT(0, geds_create_bucket(g, bucket));
    CHECK(geds_create(g, bucket, "late", &w) == 0);
    EXPECT(0, geds_write(w, data, 1000, 0));
    EXPECT(0, geds_seal(w));
    CHECK(geds_create(g, bucket, "unsealed", &w) == 0);
    CHECK(geds_open(g, bucket, "late", &r) == 0);
    geds_close(g);
    CHECK(geds_read(r, back, 1000, 0) < 0);
    CHECK(geds_write(w, data, 10, 0) <= 0);
    CHECK(geds_seal(w) < 0);
    geds_reader_close(r);

    free(data);
    free(back);
    printf("api_test: %d failures\n", failures);
    return failures;
}
