// SPDX-License-Identifier: GPL-2.0
/* Network syscalls, handled at sys_exit. Included by exec.bpf.c (one object, see there).
 *
 * connect/bind/sendto/sendmsg carry the user's sockaddr (read once the syscall returned);
 * listen carries the socket's local address read from the kernel's sock (so an implicit
 * bind is seen too). arg1 = socket type | family << 16, from the fd's struct socket.
 */

#define GH_AF_UNIX 1
#define GH_AF_INET 2
#define GH_AF_INET6 10

static __always_inline u64 sock_kind(struct task_struct *task, int fd, struct sock **skp)
{
	struct file *f = fd_file(task, fd);
	*skp = NULL;
	if (!f || !is_socket(f))
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	*skp = sk;
	u16 type = BPF_CORE_READ(sock, type);
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return (u64)type | ((u64)family << 16);
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

static __always_inline void net_exit(struct bpf_raw_tracepoint_args *ctx, struct pt_regs *regs,
				     long nr, long ret, u32 slot)
{
	const void *uaddr = NULL;
	long alen = 0;
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
		break;
	}
	default:
		return;
	}
	struct gh_event *e = scratch_event(0);
	if (!e)
		return;
	struct task_struct *task = (void *)bpf_get_current_task();
	init_event(e, GH_EV_NET, slot);
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
	emit(e, GH_HDR_SIZE + off);
}
