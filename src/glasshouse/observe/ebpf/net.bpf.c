// SPDX-License-Identifier: GPL-2.0
/* Network syscalls, handled at sys_exit, and the outcome of connections left in progress.
 * Included by exec.bpf.c (one object, see there).
 *
 * connect/bind/sendto/sendmsg carry the user's sockaddr (read once the syscall returned);
 * sendmmsg one record per run of messages to the same address; listen carries the socket's
 * local address read from the kernel's sock (so an implicit bind is seen too).
 * arg1 = socket type | family << 16 | protocol << 32, from the fd's struct socket.
 *
 * A non-blocking TCP connect that returns EINPROGRESS (or a MSG_FASTOPEN send) is followed
 * to its end: its sock is kept in `conns` until tp_btf/inet_sock_set_state moves it out of
 * SYN_SENT (established, refused, timed out, unreachable, or closed first), and a GH_EV_CONN
 * record says how it ended. The connect's own program checks the state once more after
 * adding the sock, so an outcome the kernel reached before (loopback: at once) is not lost;
 * whichever side deletes the entry reports it, exactly once.
 */

#define GH_AF_UNIX 1
#define GH_AF_INET 2
#define GH_AF_INET6 10
#define GH_SOCK_STREAM 1
#define GH_IPPROTO_TCP 6
#define GH_IPPROTO_MPTCP 262
#define GH_MSG_FASTOPEN 0x20000000
#define GH_EINPROGRESS 115
#define GH_ECONNRESET 104
#define GH_EPIPE 32
#define GH_TCP_ESTABLISHED 1
#define GH_TCP_SYN_SENT 2
#define GH_TCP_SYN_RECV 3
#define GH_TCP_CLOSE 7
#define GH_MMSG_MAX 1024 /* UIO_MAXIOV: the most messages one sendmmsg/recvmmsg moves */

/* A connection in progress: whose it is. Keyed by the struct sock's address (an entry lives
 * only while its sock is in SYN_SENT: every way out of it, close included, changes the
 * state, which removes the entry). */
struct gh_conn {
	u32 slot;
	u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct gh_conn);
} conns SEC(".maps");

/* Counters written from contexts that may interrupt a syscall program on the same CPU
 * (softirq): atomic adds, on their own slots, so no update is lost to an interrupted one. */
static __always_inline void stat_add_atomic(u32 slot, u32 what, u64 n)
{
	if (slot >= GH_MAX_SLOTS)
		return;
	u32 idx = slot * GH_STAT_STRIDE + what;
	u64 *c = bpf_map_lookup_elem(&stats, &idx);
	if (c)
		__sync_fetch_and_add(c, n);
}

/* type | family << 16 | protocol << 32 of a socket file (0 for any other file). */
static __always_inline u64 file_sock_kind(struct file *f, struct sock **skp)
{
	*skp = NULL;
	if (!f || !is_socket(f))
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	*skp = sk;
	u16 type = BPF_CORE_READ(sock, type);
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	u16 proto = BPF_CORE_READ(sk, sk_protocol);
	return (u64)type | ((u64)family << 16) | ((u64)proto << 32);
}

static __always_inline u64 sock_kind(struct task_struct *task, int fd, struct sock **skp)
{
	return file_sock_kind(fd_file(task, fd), skp);
}

static __always_inline bool is_tcp(u64 kind)
{
	u16 family = (kind >> 16) & 0xffff;
	u16 proto = (kind >> 32) & 0xffff;
	return (kind & 0xffff) == GH_SOCK_STREAM && (family == GH_AF_INET || family == GH_AF_INET6) &&
	       (proto == GH_IPPROTO_TCP || proto == GH_IPPROTO_MPTCP);
}

static __always_inline u32 read_sockaddr(struct gh_event *e, const void *uaddr, long len)
{
	if (!uaddr || len <= 0)
		return 0;
	if (len > GH_SOCKADDR_MAX)
		len = GH_SOCKADDR_MAX;
	BOUND(len, 127);
	if (bpf_probe_read_user(&e->data[0], len, uaddr)) {
		e->flags |= GH_F_UNREAD0;
		return 0;
	}
	e->str_len[0] = len;
	return len;
}

/* The local address of a listening socket, as a struct sockaddr_{in,in6,un}. */
static __always_inline u32 local_sockaddr(struct gh_event *e, struct sock *sk)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	u16 port = BPF_CORE_READ(sk, __sk_common.skc_num);
	u16 nport = (port >> 8) | (port << 8);
	if (family == GH_AF_INET) {
		struct sockaddr_in *sin = (void *)e->data;
		__builtin_memset(sin, 0, sizeof(*sin));
		sin->sin_family = family;
		sin->sin_port = nport;
		sin->sin_addr.s_addr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		e->str_len[0] = sizeof(*sin);
		return sizeof(*sin);
	}
	if (family == GH_AF_INET6) {
		struct sockaddr_in6 *sin6 = (void *)e->data;
		__builtin_memset(sin6, 0, sizeof(*sin6));
		sin6->sin6_family = family;
		sin6->sin6_port = nport;
		BPF_CORE_READ_INTO(&sin6->sin6_addr, sk, __sk_common.skc_v6_rcv_saddr);
		e->str_len[0] = sizeof(*sin6);
		return sizeof(*sin6);
	}
	if (family == GH_AF_UNIX) {
		struct unix_sock *us = (void *)sk;
		struct unix_address *ua = BPF_CORE_READ(us, addr);
		if (!ua)
			return 0;
		int ilen = BPF_CORE_READ(ua, len);
		if (ilen <= 0)
			return 0;
		u64 len = ilen;
		if (len > GH_SOCKADDR_MAX)
			len = GH_SOCKADDR_MAX;
		BOUND(len, 127); /* a no-op after the clamp */
		if (bpf_probe_read_kernel(&e->data[0], len, &ua->name))
			return 0;
		e->str_len[0] = len;
		return len;
	}
	return 0;
}

/* ---- connections in progress ---------------------------------------------------------- */

/* The outcome of a connect, from the state its sock reached after SYN_SENT. */
static __always_inline long conn_result(int state, int err)
{
	if (state != GH_TCP_CLOSE)
		return 0; /* established (and maybe on to FIN_WAIT, CLOSE_WAIT...) */
	if (!err)
		return -GH_EINPROGRESS; /* closed before the handshake finished */
	if (err == GH_ECONNRESET || err == GH_EPIPE)
		return 0; /* it was established, then reset */
	return -err;
}

static __always_inline void conn_done(struct gh_conn *c, u64 id, int state, int err)
{
	struct gh_event *e = bpf_ringbuf_reserve(&events, GH_HDR_SIZE, 0);
	if (!e) {
		stat_add_atomic(c->slot, GH_STAT_ASYNC_LOST, 1);
		return;
	}
	init_event(e, GH_EV_CONN, c->slot);
	e->tgid = e->tid = c->tgid; /* softirq: current is whoever was interrupted */
	e->ret = conn_result(state, err);
	e->nr = state;
	e->arg1 = id;
	bpf_ringbuf_submit(e, wake_flags());
	stat_add_atomic(c->slot, GH_STAT_ASYNC_EMITTED, 1);
}

/* Follow sk (a TCP connect just returned EINPROGRESS) to its outcome. Returns the id the
 * connect's record carries, 0 when it cannot be followed (counted as lost). */
static __always_inline u64 conn_track(struct sock *sk, u32 slot)
{
	u64 id = (u64)sk;
	struct gh_conn c = {.slot = slot, .tgid = bpf_get_current_pid_tgid() >> 32};
	if (bpf_map_update_elem(&conns, &id, &c, BPF_ANY)) {
		stat_add(slot, GH_STAT_LOST, 1);
		return 0;
	}
	return id;
}

/* After the connect's record is out: the outcome may already be known. */
static __always_inline void conn_check(struct sock *sk, u64 id, u32 slot)
{
	int state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == GH_TCP_SYN_SENT || state == GH_TCP_SYN_RECV)
		return; /* inet_sock_set_state reports it */
	struct gh_conn c = {.slot = slot, .tgid = bpf_get_current_pid_tgid() >> 32};
	if (bpf_map_delete_elem(&conns, &id))
		return; /* inet_sock_set_state got there first and reported it */
	conn_done(&c, id, state, BPF_CORE_READ(sk, sk_err));
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(gh_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	u64 id = (u64)sk;
	struct gh_conn *found = bpf_map_lookup_elem(&conns, &id);
	if (!found)
		return 0;
	if (newstate == GH_TCP_SYN_SENT || newstate == GH_TCP_SYN_RECV)
		return 0; /* still connecting (a simultaneous open) */
	struct gh_conn c = *found;
	if (bpf_map_delete_elem(&conns, &id))
		return 0; /* the connect's own check took it */
	/* from SYN_SENT: where it went; from anything else, the state it had reached already */
	int state = oldstate == GH_TCP_SYN_SENT || oldstate == GH_TCP_SYN_RECV ? newstate : oldstate;
	conn_done(&c, id, state, BPF_CORE_READ(sk, sk_err));
	return 0;
}

/* ---- sendmmsg / recvmmsg --------------------------------------------------------------- */

struct mmsg_ctx {
	const struct mmsghdr *vec;
	u64 kind;
	u64 name;  /* the current run's msg_name (a user pointer: read once the call returned,
	            * one pointer is one address) */
	u64 bytes; /* bytes sent to it */
	u64 total;
	u32 namelen;
	u32 slot;
	int fd;
};

static __always_inline void mmsg_flush(struct mmsg_ctx *c)
{
	if (!c->name || !c->namelen)
		return; /* a connected socket: bytes only */
	struct gh_event *e = scratch_event(0);
	if (!e)
		return;
	init_event(e, GH_EV_NET, c->slot);
	e->nr = __NR_sendmmsg;
	e->ret = c->bytes;
	e->arg0 = c->fd;
	e->arg1 = c->kind;
	u32 off = read_sockaddr(e, (void *)c->name, c->namelen);
	emit(e, GH_HDR_SIZE + off);
}

static long mmsg_send_step(u32 i, struct mmsg_ctx *c)
{
	struct mmsghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), &c->vec[i]))
		return 1;
	c->total += m.msg_len;
	u64 name = (u64)m.msg_hdr.msg_name;
	if (name != c->name || (u32)m.msg_hdr.msg_namelen != c->namelen) {
		mmsg_flush(c);
		c->name = name;
		c->namelen = m.msg_hdr.msg_namelen;
		c->bytes = 0;
	}
	c->bytes += m.msg_len;
	return 0;
}

static long mmsg_recv_step(u32 i, struct mmsg_ctx *c)
{
	unsigned int len = 0;
	if (bpf_probe_read_user(&len, sizeof(len), &c->vec[i].msg_len))
		return 1;
	c->total += len;
	return 0;
}

static __always_inline void net_mmsg(struct pt_regs *regs, long nr, long ret, u32 slot)
{
	struct mmsg_ctx c = {};
	c.vec = (void *)BPF_CORE_READ(regs, si);
	c.slot = slot;
	c.fd = BPF_CORE_READ(regs, di);
	if (nr == __NR_recvmmsg) {
		if (ret > 0)
			bpf_loop(ret > GH_MMSG_MAX ? GH_MMSG_MAX : ret, mmsg_recv_step, &c, 0);
		stat_add(slot, GH_STAT_RX, c.total);
		return;
	}
	struct sock *sk = NULL;
	c.kind = sock_kind((void *)bpf_get_current_task(), c.fd, &sk);
	if (ret < 0) { /* nothing was sent: the first message's address is the failed attempt */
		struct mmsghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), c.vec) || !m.msg_hdr.msg_name)
			return;
		c.name = (u64)m.msg_hdr.msg_name;
		c.namelen = m.msg_hdr.msg_namelen;
		c.bytes = ret;
		mmsg_flush(&c);
		return;
	}
	bpf_loop(ret > GH_MMSG_MAX ? GH_MMSG_MAX : ret, mmsg_send_step, &c, 0);
	mmsg_flush(&c);
	stat_add(slot, GH_STAT_TX, c.total);
}

/* ---- bytes on sockets through other paths ---------------------------------------------- */

static __always_inline void sock_bytes(struct task_struct *task, int fd, u32 slot, u32 what,
				       long n)
{
	if (n > 0 && is_socket(fd_file(task, fd)))
		stat_add(slot, what, n);
}

/* sendfile, splice, preadv/pwritev(2): socket bytes the read/write family does not cover
 * (and io_uring_setup, counted here with any result: see GH_STAT_URING_SETUP).
 * Returns false for any other syscall. */
static __always_inline bool net_bytes(struct pt_regs *regs, long nr, long ret, u32 slot)
{
	struct task_struct *task;
	switch (nr) {
	case __NR_io_uring_setup:
		stat_add(slot, GH_STAT_URING_SETUP, 1);
		return true;
	case __NR_sendfile: /* out_fd, in_fd */
	case __NR_splice:   /* fd_in, off_in, fd_out */
		if (ret <= 0)
			return true;
		task = (void *)bpf_get_current_task();
		int in = nr == __NR_sendfile ? BPF_CORE_READ(regs, si) : BPF_CORE_READ(regs, di);
		int out = nr == __NR_sendfile ? BPF_CORE_READ(regs, di) : BPF_CORE_READ(regs, dx);
		sock_bytes(task, out, slot, GH_STAT_TX, ret);
		sock_bytes(task, in, slot, GH_STAT_RX, ret);
		return true;
	case __NR_preadv:
	case __NR_preadv2:
	case __NR_pwritev:
	case __NR_pwritev2:
		task = (void *)bpf_get_current_task();
		bool rx = nr == __NR_preadv || nr == __NR_preadv2;
		sock_bytes(task, BPF_CORE_READ(regs, di), slot, rx ? GH_STAT_RX : GH_STAT_TX, ret);
		return true;
	}
	return false;
}

static __always_inline void net_exit(struct bpf_raw_tracepoint_args *ctx, struct pt_regs *regs,
				     long nr, long ret, u32 slot)
{
	const void *uaddr = NULL;
	long alen = 0;
	u16 flags = 0;
	int fd = BPF_CORE_READ(regs, di);
	switch (nr) {
	case __NR_connect:
	case __NR_bind:
		uaddr = (void *)BPF_CORE_READ(regs, si);
		alen = (int)BPF_CORE_READ(regs, dx);
		break;
	case __NR_listen:
		break;
	case __NR_sendto:
		if (ret > 0)
			stat_add(slot, GH_STAT_TX, ret);
		uaddr = (void *)BPF_CORE_READ(regs, r8);
		alen = (int)BPF_CORE_READ(regs, r9);
		if (!uaddr)
			return; /* a connected socket: bytes only */
		if (BPF_CORE_READ(regs, r10) & GH_MSG_FASTOPEN)
			flags = GH_F_FASTOPEN;
		break;
	case __NR_sendmsg: {
		if (ret > 0)
			stat_add(slot, GH_STAT_TX, ret);
		struct user_msghdr mh = {};
		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)BPF_CORE_READ(regs, si)))
			return;
		if (!mh.msg_name)
			return;
		uaddr = mh.msg_name;
		alen = mh.msg_namelen;
		if (BPF_CORE_READ(regs, dx) & GH_MSG_FASTOPEN)
			flags = GH_F_FASTOPEN;
		break;
	}
	case __NR_sendmmsg:
	case __NR_recvmmsg:
		net_mmsg(regs, nr, ret, slot);
		return;
	default:
		net_bytes(regs, nr, ret, slot);
		return;
	}
	struct gh_event *e = scratch_event(0);
	if (!e)
		return;
	struct task_struct *task = (void *)bpf_get_current_task();
	init_event(e, GH_EV_NET, slot);
	e->flags |= flags;
	e->nr = nr;
	e->ret = ret;
	e->arg0 = fd;
	struct sock *sk = NULL;
	e->arg1 = sock_kind(task, fd, &sk);
	u32 off;
	if (nr == __NR_listen)
		off = sk ? local_sockaddr(e, sk) : 0;
	else
		off = read_sockaddr(e, uaddr, alen);
	u64 id = 0;
	if (ret == -GH_EINPROGRESS && sk && is_tcp(e->arg1) &&
	    (nr == __NR_connect || flags & GH_F_FASTOPEN)) {
		id = conn_track(sk, slot);
		if (id) {
			BOUND(off, 127); /* a no-op: slot 0 holds <= GH_SOCKADDR_MAX bytes */
			bpf_probe_read_kernel(&e->data[off], sizeof(id), &id);
			e->str_len[1] = sizeof(id);
			off += sizeof(id);
		}
	}
	emit(e, GH_HDR_SIZE + off);
	if (id)
		conn_check(sk, id, slot);
}
