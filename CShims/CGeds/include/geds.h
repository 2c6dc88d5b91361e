/*
 * geds.h: the C ABI of GEDS, a Generic Ephemeral Data Store (libgeds.so).
 *
 *   cc app.c $(pkg-config --cflags --libs geds)
 *
 * Conventions
 * - Every function blocks until its work is done and may be called from any thread, including threads the
 *   library did not create; handles may be shared between threads (one geds_t for a whole process is normal).
 * - Functions returning int return 0 on success and a negative GEDS_E_* code otherwise; those returning int64_t
 *   return a count (>= 0) or a GEDS_E_* code. After a failure, geds_last_error() holds this thread's message.
 * - NULL or unknown handles and NULL strings are refused with GEDS_E_INVALID_ARGUMENT, never a crash. Closing a
 *   handle twice is harmless (the second close only sets the last error).
 * - Strings are UTF-8 and NUL-terminated. Buckets follow S3 bucket naming, keys S3 key naming.
 * - The library is never unloaded: do not dlclose() it (the Swift runtime inside it cannot be unloaded).
 * - fork(): the library's threads do not survive it. A child of a process that already called the library may
 *   use a handle attached to its host's gedsd (the parent's or a new one: it opens connections of its own) to
 *   read, write, list and delete; calls that need the library's threads (running a node of its own, subscribing,
 *   waiting for an absent object) fail at once with GEDS_E_INVALID_ARGUMENT saying so, never hang.
 */
#ifndef GEDS_H
#define GEDS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of this header; geds_abi_version() is the library's. */
#define GEDS_ABI_VERSION 1

/* Error codes: the negated, stable codes of GedsError (they also cross the wire). */
enum {
    GEDS_OK = 0,
    GEDS_E_INVALID_NAME = -1,         /* a bucket or key breaks the S3 naming rules */
    GEDS_E_INVALID_ARGUMENT = -2,     /* NULL or out-of-range argument, unknown or closed handle */
    GEDS_E_NO_SUCH_BUCKET = -3,
    GEDS_E_NO_SUCH_OBJECT = -4,
    GEDS_E_BUCKET_EXISTS = -5,
    GEDS_E_BUCKET_NOT_EMPTY = -6,
    GEDS_E_OBJECT_SEALED = -7,        /* the object is sealed already */
    GEDS_E_OBJECT_NOT_SEALED = -8,
    GEDS_E_OBJECT_LOST = -9,          /* every copy of the object is gone (its nodes died) */
    GEDS_E_MDS_UNREACHABLE = -10,
    GEDS_E_PEER_UNREACHABLE = -11,
    GEDS_E_PROTOCOL_VIOLATION = -12,
    GEDS_E_FRAME_TOO_LARGE = -13,
    GEDS_E_OUT_OF_SPACE = -14,
    GEDS_E_TIMED_OUT = -15,
    GEDS_E_IO = -16,
    GEDS_E_NO_SUCH_NODE = -17,
    GEDS_E_NO_SUCH_BLOB = -18,
    GEDS_E_METADATA_TOO_LARGE = -19,
    GEDS_E_INTERNAL = -20,
    GEDS_E_CHECKSUM_MISMATCH = -21,   /* stored bytes do not match their CRC-32C */
    GEDS_E_S3_DELETION_PENDING = -22,
    GEDS_E_COMPACTED = -23,           /* a resume from an event revision older than the MDS's history */
    GEDS_E_SUBSCRIBER_TOO_SLOW = -24, /* a subscription fell too far behind and was ended */
    GEDS_E_OBJECT_EXISTS = -25,       /* an exclusive create found the key taken (or lost the race to seal it) */
    GEDS_E_AUTHENTICATION_FAILED = -26 /* the deployment's token (GEDS_TOKEN_FILE) is missing or wrong */
};

typedef struct geds geds_t;                 /* a connection: this process's node in the store */
typedef struct geds_writer geds_writer_t;   /* an object being written (invisible until sealed) */
typedef struct geds_reader geds_reader_t;   /* a sealed object opened for reading */
typedef struct geds_view geds_view_t;       /* a zero-copy view of a whole object */
typedef struct geds_iter geds_iter_t;       /* an iterator over listing entries */

/* Options of geds_connect_config; geds_config_init fills in the defaults (NULL / 0 = default). */
typedef struct geds_config {
    const char *mds;          /* the MDS, HOST:PORT; NULL: $GEDS_MDS, else 127.0.0.1:4381 */
    const char *transport;    /* "auto" (RDMA where this host has a device, else TCP), "rdma" or "tcp"; NULL: auto */
    const char *tier0_dir;    /* this process's tier-0 folder; NULL: a fresh /dev/shm folder removed at close */
    const char *host_id;      /* processes with one host id map each other's tier 0; NULL: $GEDS_HOST_ID, else boot id */
    const char *name;         /* this node's name; NULL: HOST-PID-RANDOM */
    const char *persistency;  /* default for objects created through this handle: NULL (the bucket's), "ephemeral",
                                 "tier1", "write-through" or "write-back" */
    int64_t timeout_ms;       /* how long a request may wait; 0: 10000 */
    uint64_t tier0_capacity;  /* bytes this process's tier 0 may hold; 0: as much as its folder takes */
} geds_config_t;

/* What an iterator yields; the strings stay valid until the next geds_next or geds_iter_close on it. */
enum { GEDS_ENTRY_OBJECT = 0, GEDS_ENTRY_PREFIX = 1, GEDS_ENTRY_BUCKET = 2, GEDS_ENTRY_LOCATION = 3,
       GEDS_ENTRY_METADATA = 4 };
typedef struct geds_entry {
    int kind;                 /* GEDS_ENTRY_* */
    const char *name;         /* key, common prefix, bucket, node name or metadata name */
    const char *detail;       /* location: "tier0 tcp://HOST:PORT host=ID" or "s3 region=R"; metadata: the value; else "" */
    uint64_t size;            /* object size in bytes (0 for other kinds) */
    uint64_t modified_ms;     /* object: sealed at, milliseconds since 1970 (0 for other kinds) */
} geds_entry_t;

/* What geds_stat reports about a sealed object. */
typedef struct geds_stat {
    uint64_t size;            /* bytes */
    uint64_t modified_ms;     /* sealed at, milliseconds since 1970 */
    uint32_t locations;       /* copies (tier 0, tier 1, S3); geds_locations lists them */
    uint32_t metadata_count;  /* user metadata entries; geds_metadata_list lists them */
} geds_stat_t;

/* ---- library ---- */
const char *geds_version(void);                  /* "GEDS 0.1.0 (ABI 1)"; static storage */
int geds_abi_version(void);                      /* the library's GEDS_ABI_VERSION */
const char *geds_strerror(int code);             /* the name and meaning of a GEDS_E_* code; static storage */
const char *geds_last_error(void);               /* this thread's last failure, as the geds CLI prints it ("" if none);
                                                    valid until this thread's next failing call */

/* ---- connecting ---- */
int geds_connect(const char *mds, geds_t **out);            /* mds NULL: $GEDS_MDS; attaches to the host's gedsd if any */
                                                             /* ($GEDS_NODE, else a gedsd of the same host id and MDS
                                                                in the default socket folder: its objects outlive this
                                                                process; without one, this process embeds a node: what
                                                                it alone holds goes at geds_close, so geds_relocate
                                                                what must outlive it) */
void geds_config_init(geds_config_t *config);                /* all defaults */
int geds_connect_config(const geds_config_t *config, geds_t **out);  /* connect with options */
                                                             /* both: a deployment with a token (gedsd/geds-mds
                                                                --token-file) needs $GEDS_TOKEN_FILE naming the file;
                                                                a missing or wrong one: GEDS_E_AUTHENTICATION_FAILED;
                                                                TLS (gedsd/geds-mds --tls-cert/--tls-key/--tls-ca)
                                                                needs $GEDS_TLS_CERT, $GEDS_TLS_KEY and $GEDS_TLS_CA
                                                                (a process with a node of its own serves over TLS) */
void geds_close(geds_t *g);                                  /* stops this process's node; objects it alone holds go */

/* ---- buckets ---- */
int geds_create_bucket(geds_t *g, const char *bucket);       /* an existing bucket is not an error */
int geds_delete_bucket(geds_t *g, const char *bucket, int force);  /* force: with all its objects */
int geds_list_buckets(geds_t *g, geds_iter_t **out);         /* yields GEDS_ENTRY_BUCKET entries */

/* ---- writing ---- */
int geds_create(geds_t *g, const char *bucket, const char *key, geds_writer_t **out);  /* a new, unsealed object */
enum { GEDS_CREATE_EXCLUSIVE = 1,  /* create-if-absent: GEDS_E_OBJECT_EXISTS now, or at the seal if another won */
       GEDS_CREATE_ASYNC_REPLICAS = 2 };  /* with replicas: the seal returns after the first copy; the MDS makes the rest */
/* Keep n copies (1 to 16), each on a distinct host (0: the bucket's factor); the seal returns once all are published,
 * GEDS_E_NO_SUCH_NODE when too few hosts have a gedsd. */
#define GEDS_CREATE_REPLICAS(n) (((unsigned)(n) & 0xFFu) << 8)
int geds_create_flags(geds_t *g, const char *bucket, const char *key, unsigned flags, geds_writer_t **out);
int geds_put(geds_t *g, const char *bucket, const char *key, const void *data, size_t size);
                                                             /* a whole object in one call (create, write, seal);
                                                                attached, up to 64 KiB is one request to the gedsd */
int geds_put_flags(geds_t *g, const char *bucket, const char *key, const void *data, size_t size, unsigned flags,
                   const char *const *names, const char *const *values, size_t count);
                                                             /* with geds_create_flags' flags and user metadata
                                                                (names/values: count entries; NULL when count is 0) */
int geds_write(geds_writer_t *w, const void *buf, size_t len, uint64_t offset);       /* at any offset; grows it */
int geds_truncate(geds_writer_t *w, uint64_t size);          /* sets the object's size (cuts or zero-fills) */
int geds_writer_size(geds_writer_t *w, uint64_t *size);      /* bytes written so far (highest offset reached) */
int geds_seal(geds_writer_t *w);                             /* publishes and frees the writer */
int geds_seal_metadata(geds_writer_t *w, const char *const *names, const char *const *values, size_t count);
                                                             /* publishes with user metadata; frees the writer */
void geds_writer_discard(geds_writer_t *w);                  /* frees an unsealed writer; nothing is published */

/* ---- reading ---- */
int geds_open(geds_t *g, const char *bucket, const char *key, geds_reader_t **out);
int geds_reader_size(geds_reader_t *r, uint64_t *size);
int64_t geds_read(geds_reader_t *r, void *buf, size_t len, uint64_t offset);   /* bytes read or GEDS_E_* */
void geds_reader_close(geds_reader_t *r);
int64_t geds_read_object(geds_t *g, const char *bucket, const char *key, void *buf, size_t len, uint64_t offset);
                                                             /* lookup and read in one call: fastest for small objects */
int geds_view(geds_reader_t *r, geds_view_t **out, const void **data, uint64_t *size);
                                                             /* the whole object without copies (fetched into this
                                                                host's tier 0 first if remote); the bytes stay valid
                                                                until geds_view_release, even if the object is deleted */
void geds_view_release(geds_view_t *v);

/* ---- namespace ---- */
int geds_stat(geds_t *g, const char *bucket, const char *key, geds_stat_t *out);
int geds_list(geds_t *g, const char *bucket, const char *prefix, const char *delimiter, geds_iter_t **out);
                                                             /* objects (and common prefixes when delimiter is set);
                                                                prefix/delimiter NULL: none */
int geds_next(geds_iter_t *it, geds_entry_t *entry);         /* 1: an entry, 0: the end, < 0: GEDS_E_* */
void geds_iter_close(geds_iter_t *it);
int geds_delete(geds_t *g, const char *bucket, const char *key);
int geds_delete_prefix(geds_t *g, const char *bucket, const char *prefix, uint64_t *deleted);  /* deleted may be NULL */
int geds_rename(geds_t *g, const char *bucket, const char *key, const char *to_bucket, const char *to_key);
int geds_copy(geds_t *g, const char *bucket, const char *key, const char *to_bucket, const char *to_key);

/* ---- metadata ---- */
int64_t geds_metadata_get(geds_t *g, const char *bucket, const char *key, const char *name, char *value, size_t capacity);
                                                             /* like snprintf: the value's length (copied up to
                                                                capacity-1 bytes plus NUL); GEDS_E_INVALID_ARGUMENT if
                                                                the object has no such name */
int geds_metadata_set(geds_t *g, const char *bucket, const char *key, const char *const *names,
                      const char *const *values, size_t count);   /* replaces all of the object's user metadata */
int geds_metadata_list(geds_t *g, const char *bucket, const char *key, geds_iter_t **out);  /* GEDS_ENTRY_METADATA */

/* ---- placement and persistence ---- */
int geds_locations(geds_t *g, const char *bucket, const char *key, geds_iter_t **out);     /* GEDS_ENTRY_LOCATION */
int geds_relocate(geds_t *g, const char *bucket, const char *key, const char *node);
                                                             /* moves a sealed object to another node (NULL: the least
                                                                loaded gedsd), so it outlives this process */
int geds_set_bucket_storage(geds_t *g, const char *bucket, const char *s3, const char *prefix, const char *region,
                            const char *persistency);
                                                             /* gives a bucket (created if missing) an S3 store:
                                                                s3 "http://HOST:PORT/S3BUCKET[/PREFIX]", prefix and
                                                                region NULL: the address's and us-east-1, persistency
                                                                NULL: "write-back"; s3 NULL takes the store away.
                                                                Credentials: each process's AWS_* environment */
int geds_flush(geds_t *g, uint64_t timeout_ms);              /* waits for every node's write-back uploads to S3;
                                                                timeout 0: 300000 */

/* ---- pub/sub: ordered, resumable events of the namespace (see geds watch) ---- */
typedef struct geds_subscription geds_subscription_t;  /* a subscription's events, in revision order, each once */
enum { GEDS_SCOPE_BUCKET = 1, GEDS_SCOPE_PREFIX = 2, GEDS_SCOPE_KEY = 3 };
enum { GEDS_EVENT_CREATED = 1, GEDS_EVENT_DELETED = 2, GEDS_EVENT_RENAMED = 3, GEDS_EVENT_COPIED = 4,
       GEDS_EVENT_METADATA = 5, GEDS_EVENT_BUCKET_CREATED = 6, GEDS_EVENT_BUCKET_DELETED = 7 };
/* One change; the strings stay valid until the next geds_next_event or geds_subscription_close on it. */
typedef struct geds_event {
    uint64_t revision;        /* the MDS's revision of this change: resume after it */
    int kind;                 /* GEDS_EVENT_* */
    const char *bucket;
    const char *key;          /* "" for bucket events */
    const char *source_bucket; /* renamed: the old name, copied: the source; else "" */
    const char *source_key;
} geds_event_t;

int geds_wait(geds_t *g, const char *bucket, const char *key, int64_t timeout_ms);
                                                             /* returns 0 once the object exists sealed (at once if
                                                                it does); GEDS_E_TIMED_OUT after timeout_ms (< 0: no
                                                                limit). A seal during the call is never missed */
int geds_subscribe(geds_t *g, int scope, const char *bucket, const char *name, const uint64_t *after,
                   geds_subscription_t **out);
                                                             /* scope GEDS_SCOPE_*: name is the prefix or key (NULL for
                                                                a bucket); after NULL: changes from now, else every change
                                                                after that revision (GEDS_E_COMPACTED when the MDS's history
                                                                no longer reaches back); resumes by itself after a lost
                                                                connection */
int geds_next_event(geds_subscription_t *s, int64_t timeout_ms, geds_event_t *event);
                                                             /* 1: an event, 0: none within timeout_ms (0: do not wait,
                                                                < 0: no limit), < 0: GEDS_E_* (the subscription is over) */
int geds_subscription_fd(geds_subscription_t *s);            /* readable when an event may be waiting (for poll/epoll);
                                                                drained by geds_next_event; owned by the subscription */
int geds_subscription_revision(geds_subscription_t *s, uint64_t *revision);
                                                             /* everything up to it was delivered: resume after it */
void geds_subscription_close(geds_subscription_t *s);        /* ends the subscription */

#ifdef __cplusplus
}
#endif

#endif /* GEDS_H */
