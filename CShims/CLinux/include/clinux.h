#pragma once
// Linux calls and constants that Swift's Glibc module does not show (it is built without _GNU_SOURCE), and a
// hardware CRC32C. The definitions are in shim.c, which is compiled with _GNU_SOURCE.
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// The O_DIRECT open flag.
int clinux_o_direct(void);

/// fallocate(2); returns 0 or -1 with errno set. `mode` 0 allocates and extends the file size.
int clinux_fallocate(int fd, int mode, off_t offset, off_t length);

/// The alignment direct I/O needs for memory and for file offsets/lengths on the file system holding `fd`,
/// from statx(STATX_DIOALIGN) (Linux 6.1+). Returns 0 when the kernel reported them, -1 otherwise (errno set,
/// or ENOTSUP when the kernel or file system did not say).
int clinux_dio_alignment(int fd, uint32_t *memory_alignment, uint32_t *offset_alignment);

/// Extended attributes of an open file (user.* names). Same returns as fsetxattr/fgetxattr/fremovexattr.
int clinux_fsetxattr(int fd, const char *name, const void *value, size_t size);
ssize_t clinux_fgetxattr(int fd, const char *name, void *value, size_t size);
int clinux_fremovexattr(int fd, const char *name);

/// 1 when this CPU has a CRC32C instruction (x86-64 SSE4.2, arm64 CRC), else 0.
int clinux_crc32c_hardware(void);
/// CRC32C (Castagnoli) with the hardware instruction; call only when clinux_crc32c_hardware() is 1.
/// `crc` is the running value as seen from outside (start with 0); the result is the value to pass next.
uint32_t clinux_crc32c_update(uint32_t crc, const void *data, size_t length);

/// Sends `length` bytes on a Unix stream socket in one sendmsg, with `fd` attached (SCM_RIGHTS) when it is
/// not -1 (MSG_NOSIGNAL: a closed peer is EPIPE, not a signal). Returns what sendmsg returns.
ssize_t clinux_send_with_fd(int socket, const void *bytes, size_t length, int fd);

/// Receives up to `length` bytes with recvmsg; a descriptor that came along (SCM_RIGHTS, close-on-exec) is
/// stored in `*fd`, else `*fd` is -1 (extra descriptors are closed). Returns what recvmsg returns.
ssize_t clinux_receive_with_fd(int socket, void *bytes, size_t length, int *fd);

/// The process id, user id and group id of a Unix socket's peer (SO_PEERCRED). Returns 0, or -1 with errno.
int clinux_peer_credentials(int socket, int32_t *pid, uint32_t *uid, uint32_t *gid);

/// Takes a write lease on the file open as `fd` (F_SETLEASE): the kernel grants it only while no other open file
/// description of the file exists on this host (a descriptor, a mapping, a descriptor in flight in a socket), so a
/// granted lease proves that nobody else has the file open or mapped. Someone opening the file while the lease is
/// held breaks it, which the kernel signals with SIGURG (ignored unless handled) instead of SIGIO (whose default
/// ends the process). Returns 0, or -1 with errno (EAGAIN: the file is open elsewhere).
int clinux_take_write_lease(int fd);

/// 1 while the write lease taken on `fd` is held and nobody has started to break it by opening the file, else 0.
int clinux_write_lease_intact(int fd);

/// Gives up the lease on `fd` (an opener waiting for it goes on). Returns 0, or -1 with errno.
int clinux_release_lease(int fd);

/// A non-blocking, close-on-exec eventfd (its header is not visible from Swift); -1 with errno on failure.
int clinux_eventfd(void);
