/* File and network operations submitted through io_uring (raw syscalls, no liburing), in
 * the current directory and on loopback sockets this program opens itself.
 *
 *   uring    the operations below, each result, the ports it used ("ports LISTENER
 *            CLOSED UDP RING_LISTENER") and the socket bytes it moved ("tx=N rx=M")
 *
 * Prints "setup <errno>" and exits 3 when io_uring_setup fails (a seccomp filter). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define OP_BIND 56   /* IORING_OP_BIND, Linux 6.11 (newer than some uapi headers) */
#define OP_LISTEN 57 /* IORING_OP_LISTEN */

static int ring_fd;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static void ring_setup(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	ring_fd = syscall(__NR_io_uring_setup, 8, &p);
	if (ring_fd < 0) {
		printf("setup %d\n", errno);
		exit(3);
	}
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (cq_len > sq_len)
		sq_len = cq_len; /* IORING_FEAT_SINGLE_MMAP: one mapping holds both rings */
	char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
			IORING_OFF_SQ_RING);
	sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || sqes == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	sq_tail = (unsigned *)(sq + p.sq_off.tail);
	sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	sq_array = (unsigned *)(sq + p.sq_off.array);
	cq_head = (unsigned *)(sq + p.cq_off.head);
	cq_tail = (unsigned *)(sq + p.cq_off.tail);
	cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
}

static struct io_uring_sqe *sqe_get(int op, int fd)
{
	unsigned tail = *sq_tail, idx = tail & *sq_mask;
	struct io_uring_sqe *sqe = &sqes[idx];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = op;
	sqe->fd = fd;
	sqe->user_data = tail + 1;
	sq_array[idx] = idx;
	return sqe;
}

/* Submit the prepared sqe and wait for its completion: its result. */
static int submit(void)
{
	__atomic_store_n(sq_tail, *sq_tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, ring_fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
		perror("io_uring_enter");
		exit(1);
	}
	unsigned head = *cq_head;
	while (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE))
		;
	int res = cqes[head & *cq_mask].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

static int path_op(int op, const char *p1, const char *p2, int flags)
{
	struct io_uring_sqe *sqe = sqe_get(op, AT_FDCWD);
	sqe->addr = (unsigned long)p1;
	if (op == IORING_OP_OPENAT) {
		sqe->open_flags = flags;
		sqe->len = 0644;
	} else if (op == IORING_OP_RENAMEAT || op == IORING_OP_LINKAT) {
		sqe->len = AT_FDCWD; /* newdirfd */
		sqe->addr2 = (unsigned long)p2;
	} else if (op == IORING_OP_SYMLINKAT) {
		sqe->addr2 = (unsigned long)p2; /* the link; p1 is its target */
	} else if (op == IORING_OP_MKDIRAT) {
		sqe->len = 0755;
	}
	return submit();
}

static int io(int op, int fd, void *buf, unsigned len, const struct sockaddr_in *to)
{
	struct io_uring_sqe *sqe = sqe_get(op, fd);
	sqe->addr = (unsigned long)buf;
	sqe->len = len;
	if (op == IORING_OP_CONNECT || op == OP_BIND) {
		sqe->len = 0;
		sqe->addr2 = sizeof(*to); /* the address length */
	}
	if (to && op == IORING_OP_SEND) {
		sqe->addr2 = (unsigned long)to;
		sqe->addr_len = sizeof(*to);
	}
	return submit();
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &len);
	return ntohs(a.sin_port);
}

int main(void)
{
	char buf[512];
	long tx = 0, rx = 0;
	ring_setup();

	/* files: each as its syscall twin would be recorded */
	int fd = path_op(IORING_OP_OPENAT, "u-created.txt", NULL, O_CREAT | O_WRONLY | O_TRUNC);
	memset(buf, 'f', sizeof(buf));
	printf("write %d\n", io(IORING_OP_WRITE, fd, buf, 100, NULL));
	close(fd);
	printf("mkdir %d\n", path_op(IORING_OP_MKDIRAT, "u-dir", NULL, 0));
	printf("rename %d\n", path_op(IORING_OP_RENAMEAT, "u-created.txt", "u-dir/u-renamed.txt", 0));
	printf("symlink %d\n", path_op(IORING_OP_SYMLINKAT, "u-dir/u-renamed.txt", "u-link", 0));
	printf("link %d\n", path_op(IORING_OP_LINKAT, "u-dir/u-renamed.txt", "u-hard", 0));
	printf("unlink %d\n", path_op(IORING_OP_UNLINKAT, "u-hard", NULL, 0));
	printf("missing %d\n", path_op(IORING_OP_OPENAT, "u-missing", NULL, O_RDONLY));

	/* network: a TCP listener of its own, connected to through the ring */
	int srv = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in any = loopback(0);
	bind(srv, (struct sockaddr *)&any, sizeof(any));
	listen(srv, 4);
	struct sockaddr_in to = loopback(port_of(srv));
	int c = socket(AF_INET, SOCK_STREAM, 0);
	printf("connect %d\n", io(IORING_OP_CONNECT, c, &to, 0, &to));
	int peer = accept(srv, NULL, NULL);
	int n = io(IORING_OP_SEND, c, buf, 123, NULL); /* connected: bytes only */
	tx += n;
	for (int got = 0, k; got < n; got += k, rx += k)
		if ((k = read(peer, buf, sizeof(buf))) <= 0)
			break;
	tx += write(peer, buf, 50);
	rx += io(IORING_OP_RECV, c, buf, 50, NULL);

	/* a refused connect */
	int closed = socket(AF_INET, SOCK_STREAM, 0);
	bind(closed, (struct sockaddr *)&any, sizeof(any));
	struct sockaddr_in nowhere = loopback(port_of(closed));
	close(closed);
	int r = socket(AF_INET, SOCK_STREAM, 0);
	printf("refused %d\n", io(IORING_OP_CONNECT, r, &nowhere, 0, &nowhere));

	/* a datagram to an address, through the ring */
	int udp_in = socket(AF_INET, SOCK_DGRAM, 0);
	bind(udp_in, (struct sockaddr *)&any, sizeof(any));
	struct sockaddr_in dgram_to = loopback(port_of(udp_in));
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	tx += io(IORING_OP_SEND, u, buf, 77, &dgram_to);
	rx += recv(udp_in, buf, sizeof(buf), 0);

	/* bind + listen through the ring (Linux 6.11+; EINVAL before) */
	int l = socket(AF_INET, SOCK_STREAM, 0);
	printf("bind %d\n", io(OP_BIND, l, &any, 0, &any));
	printf("listen %d\n", io(OP_LISTEN, l, NULL, 1, NULL));
	printf("ports %d %d %d %d\n", port_of(srv), ntohs(nowhere.sin_port), port_of(udp_in),
	       port_of(l));

	for (int i = 0; i < 3; i++)
		io(IORING_OP_NOP, -1, NULL, 0, NULL);
	printf("tx=%ld rx=%ld\n", tx, rx);
	return 0;
}
