#define _GNU_SOURCE
#include "cverbs.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/eventfd.h>

// The exported function, not the header's macro of the same name.
#undef ibv_get_device_list

struct ibv_device **cverbs_get_device_list(int *count, int *error) {
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(count);
    *error = list ? 0 : (errno ? errno : ENODEV);
    return list;
}

int cverbs_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attributes) {
    return ibv_query_port(context, port, attributes);
}

struct ibv_mr *cverbs_reg_mr(struct ibv_pd *pd, void *address, size_t length, uint64_t iova, int access) {
    return ibv_reg_mr_iova2(pd, address, length, iova, (unsigned int)access);
}

int cverbs_set_ack_timeout(struct rdma_cm_id *id, uint8_t value) {
    if (rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &value, sizeof value) == 0) return 0;
    return errno ? errno : EINVAL;
}

int cverbs_errno(void) { return errno; }

void cverbs_set_thread_name(const char *name) {
    char short_name[16];
    snprintf(short_name, sizeof short_name, "%s", name);
    pthread_setname_np(pthread_self(), short_name);
}

int cverbs_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
