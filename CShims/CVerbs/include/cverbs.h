#pragma once
// Thin C over libibverbs and librdmacm: only what Swift cannot call well itself. Everything else
// (ibv_post_send/ibv_post_recv/ibv_poll_cq/ibv_req_notify_cq are static inline and import fine, and the
// unions in ibv_send_wr/ibv_wc/rdma_cm_event are settable from Swift) is called directly from GedsVerbs.
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdint.h>

/// ibv_get_device_list is a function-like macro (static-provider hook); this calls the exported function and
/// hands back errno (38 ENOSYS when the kernel has no RDMA at all; NULL is returned then, not an empty list).
struct ibv_device **cverbs_get_device_list(int *count, int *error);

/// ibv_query_port is a macro over an inline helper that Swift binds to a legacy symbol with an incomplete
/// type. Returns 0 or an errno value.
int cverbs_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attributes);

/// ibv_reg_mr and ibv_reg_mr_iova are function-like macros. Registers [address, address+length) so that
/// peers address it as [iova, iova+length) (iova == address for an ordinary registration). NULL + errno on
/// failure.
struct ibv_mr *cverbs_reg_mr(struct ibv_pd *pd, void *address, size_t length, uint64_t iova, int access);

/// Sets RDMA_OPTION_ID_ACK_TIMEOUT (the RC local ACK timeout exponent: 4.096 us * 2^value). 0 or errno.
int cverbs_set_ack_timeout(struct rdma_cm_id *id, uint8_t value);

/// The errno value of the calling thread (Swift's Glibc `errno` works too; this keeps call sites uniform).
int cverbs_errno(void);

/// Names the calling thread (pthread_setname_np needs _GNU_SOURCE, which Swift's Glibc module lacks); the
/// name is cut to 15 bytes.
void cverbs_set_thread_name(const char *name);

/// A non-blocking, close-on-exec eventfd (the poll thread's wake-up); -1 + errno on failure. <sys/eventfd.h>
/// is not part of Swift's Glibc module.
int cverbs_eventfd(void);
