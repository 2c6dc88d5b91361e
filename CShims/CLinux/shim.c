// Compiled with _GNU_SOURCE (Package.swift), which exposes O_DIRECT, fallocate and statx.
#include "clinux.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/xattr.h>

int clinux_o_direct(void) { return O_DIRECT; }

int clinux_fallocate(int fd, int mode, off_t offset, off_t length) { return fallocate(fd, mode, offset, length); }

int clinux_dio_alignment(int fd, uint32_t *memory_alignment, uint32_t *offset_alignment) {
#ifdef STATX_DIOALIGN
    struct statx status;
    memset(&status, 0, sizeof status);
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &status) != 0) return -1;
    if (!(status.stx_mask & STATX_DIOALIGN) || status.stx_dio_offset_align == 0) {
        errno = ENOTSUP;
        return -1;
    }
    *memory_alignment = status.stx_dio_mem_align;
    *offset_alignment = status.stx_dio_offset_align;
    return 0;
#else
    (void)fd; (void)memory_alignment; (void)offset_alignment;
    errno = ENOTSUP;
    return -1;
#endif
}

int clinux_fsetxattr(int fd, const char *name, const void *value, size_t size) {
    return fsetxattr(fd, name, value, size, 0);
}
ssize_t clinux_fgetxattr(int fd, const char *name, void *value, size_t size) {
    return fgetxattr(fd, name, value, size);
}
int clinux_fremovexattr(int fd, const char *name) { return fremovexattr(fd, name); }

#if defined(__x86_64__)
#include <nmmintrin.h>

// Multiplication in GF(2)[x] modulo the Castagnoli polynomial, operands and result bit-reflected (x^0 is bit 31).
static uint32_t gf2_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u) product ^= b;
        a <<= 1;
        b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return product;
}

// x^(8·bytes) mod P, by repeated squaring.
static uint32_t power_of_x_for_bytes(size_t bytes) {
    uint32_t result = 0x80000000u;          // x^0
    uint32_t square = 0x00800000u;          // x^8: one byte
    while (bytes) {
        if (bytes & 1) result = gf2_multiply(result, square);
        square = gf2_multiply(square, square);
        bytes >>= 1;
    }
    return result;
}

enum { STRIDE = 8192 };                       // bytes per stream per block
static uint32_t shift_one_stride, shift_two_strides;

__attribute__((constructor)) static void crc32c_prepare(void) {
    shift_one_stride = power_of_x_for_bytes(STRIDE);
    shift_two_strides = power_of_x_for_bytes(2 * STRIDE);
}

int clinux_crc32c_hardware(void) { return __builtin_cpu_supports("sse4.2") ? 1 : 0; }

__attribute__((target("sse4.2")))
static uint32_t crc32c_serial(uint32_t crc, const unsigned char *p, size_t n) {
    while (n > 0 && ((uintptr_t)p & 7)) { crc = _mm_crc32_u8(crc, *p++); n--; }
    uint64_t c = crc;
    while (n >= 8) { uint64_t v; memcpy(&v, p, 8); c = _mm_crc32_u64(c, v); p += 8; n -= 8; }
    crc = (uint32_t)c;
    while (n > 0) { crc = _mm_crc32_u8(crc, *p++); n--; }
    return crc;
}

// Three independent streams over the three thirds of each block hide the instruction's latency (3 cycles, one
// issued per cycle); the first two are then moved past the bytes that follow them (multiplication by
// x^(8·length) mod P) and the three are added.
__attribute__((target("sse4.2")))
uint32_t clinux_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (length >= 3 * STRIDE) {
        uint64_t a = c, b = 0, d = 0;
        for (size_t i = 0; i < STRIDE; i += 8) {
            uint64_t va, vb, vd;
            memcpy(&va, p + i, 8); memcpy(&vb, p + STRIDE + i, 8); memcpy(&vd, p + 2 * STRIDE + i, 8);
            a = _mm_crc32_u64(a, va); b = _mm_crc32_u64(b, vb); d = _mm_crc32_u64(d, vd);
        }
        c = gf2_multiply((uint32_t)a, shift_two_strides) ^ gf2_multiply((uint32_t)b, shift_one_stride) ^ (uint32_t)d;
        p += 3 * STRIDE;
        length -= 3 * STRIDE;
    }
    return ~crc32c_serial(c, p, length);
}

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>

int clinux_crc32c_hardware(void) { return 1; }

uint32_t clinux_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (length >= 8) { uint64_t v; memcpy(&v, p, 8); c = __crc32cd(c, v); p += 8; length -= 8; }
    while (length > 0) { c = __crc32cb(c, *p++); length--; }
    return ~c;
}

#else
int clinux_crc32c_hardware(void) { return 0; }

uint32_t clinux_crc32c_update(uint32_t crc, const void *data, size_t length) {
    (void)data; (void)length;
    return crc;
}
#endif

#include <sys/socket.h>
#include <unistd.h>

ssize_t clinux_send_with_fd(int socket, const void *bytes, size_t length, int fd) {
    struct iovec vector = { .iov_base = (void *)bytes, .iov_len = length };
    struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1 };
    union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(int))]; } control;
    if (fd >= 0) {
        memset(&control, 0, sizeof control);
        message.msg_control = control.space;
        message.msg_controllen = sizeof control.space;
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof(int));
    }
    return sendmsg(socket, &message, MSG_NOSIGNAL);
}

ssize_t clinux_receive_with_fd(int socket, void *bytes, size_t length, int *fd) {
    struct iovec vector = { .iov_base = bytes, .iov_len = length };
    union { struct cmsghdr header; char space[CMSG_SPACE(4 * sizeof(int))]; } control;
    struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1,
                              .msg_control = control.space, .msg_controllen = sizeof control.space };
    *fd = -1;
    ssize_t got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (got < 0) return got;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t index = 0; index < count; index++) {
            int received;
            memcpy(&received, CMSG_DATA(header) + index * sizeof(int), sizeof(int));
            if (*fd < 0) *fd = received; else close(received);
        }
    }
    return got;
}

int clinux_peer_credentials(int socket, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred credentials;
    socklen_t size = sizeof credentials;
    if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

#include <signal.h>

int clinux_take_write_lease(int fd) {
    if (fcntl(fd, F_SETSIG, SIGURG) != 0) return -1;
    return fcntl(fd, F_SETLEASE, F_WRLCK);
}

int clinux_write_lease_intact(int fd) { return fcntl(fd, F_GETLEASE) == F_WRLCK ? 1 : 0; }

int clinux_release_lease(int fd) { return fcntl(fd, F_SETLEASE, F_UNLCK); }

int clinux_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
