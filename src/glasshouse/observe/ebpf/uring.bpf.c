// SPDX-License-Identifier: GPL-2.0
/* io_uring operations. Included by exec.bpf.c after net.bpf.c (one object, see there).
 *
 * An operation submitted through io_uring runs no syscall of its own, so sys_exit never
 * sees it. Two tracepoints do:
 *   tp_btf/io_uring_submit_req  the request after its prep: paths already copied into the
 *                               kernel (struct filename), addresses into req->async_data
 *   tp_btf/io_uring_complete    its result (cqe->res), from the submitting process's context
 *                               (inline, task work or its io-wq worker threads)
 * Every op of a tracked process is counted (GH_STAT_URING + opcode). The ops that have a
 * recorded syscall twin (openat, unlinkat, renameat, mkdirat, symlinkat, linkat, ftruncate,
 * connect, bind, listen, send/sendmsg to an address) emit a GH_EV_URING record at submit,
 * laid out like the twin's record, and one at completion; user space pairs them by the
 * request's address (unique while it is in flight). Bytes that read/write/send/recv/splice
 * ops move on sockets go to the same counters as the syscalls'. A bind's or listen's address
 * is the socket's own once it completed (a failed io_uring bind has no address to show).
 *
 * The io_uring types are declared here (CO-RE flavors, fields by name), not taken from
 * vmlinux.h: a kernel built without io_uring still compiles this object, and the loader
 * leaves these two programs out where the kernel lacks their tracepoints.
 */

#define GH_IORING_OP_SENDMSG 9
#define GH_IORING_OP_RECVMSG 10
#define GH_IORING_OP_CONNECT 16
#define GH_IORING_OP_OPENAT 18
#define GH_IORING_OP_SEND 26
#define GH_IORING_OP_RECV 27
#define GH_IORING_OP_OPENAT2 28
#define GH_IORING_OP_SPLICE 30
#define GH_IORING_OP_RENAMEAT 35
#define GH_IORING_OP_UNLINKAT 36
#define GH_IORING_OP_MKDIRAT 37
#define GH_IORING_OP_SYMLINKAT 38
#define GH_IORING_OP_LINKAT 39
#define GH_IORING_OP_SEND_ZC 47
#define GH_IORING_OP_SENDMSG_ZC 48
#define GH_IORING_OP_READ_MULTISHOT 49
#define GH_IORING_OP_FTRUNCATE 55
#define GH_IORING_OP_BIND 56
#define GH_IORING_OP_LISTEN 57
#define GH_IOSQE_FIXED_FILE 1            /* REQ_F_FIXED_FILE mirrors the sqe flag */
#define GH_IORING_RECV_MULTISHOT (1u << 1)
#define GH_IORING_RECVSEND_BUNDLE (1u << 4)
#define GH_IORING_CQE_F_MORE (1u << 1)
#define GH_SPLICE_F_FD_IN_FIXED (1u << 31)
#define GH_URING_DONE_SIZE (GH_HDR_SIZE + 128) /* a completion: header + a local address */

struct io_cqe___gh {
	u64 user_data;
	s32 res;
	int fd;
} __attribute__((preserve_access_index));

struct io_kiocb___gh {
	struct file *file;
	u8 opcode;
	u32 flags; /* io_req_flags_t: the low byte mirrors the sqe's IOSQE_* flags */
	struct io_cqe___gh cqe;
	void *ctx; /* struct io_ring_ctx */
	void *async_data;
} __attribute__((preserve_access_index));

struct io_uring_cqe___gh {
	u64 user_data;
	s32 res;
	u32 flags;
} __attribute__((preserve_access_index));

/* io_kiocb_to_cmd(req, T): each op's command struct overlays the start of the request */
struct io_open___gh {
	int dfd;
	struct filename *filename;
	struct open_how how;
} __attribute__((preserve_access_index));

struct io_rename___gh {
	int old_dfd;
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
	int flags;
} __attribute__((preserve_access_index));

struct io_link___gh {
	int old_dfd;
	int new_dfd;
	struct filename *oldpath;
	struct filename *newpath;
	int flags;
} __attribute__((preserve_access_index));

struct io_unlink___gh {
	int dfd;
	int flags;
	struct filename *filename;
} __attribute__((preserve_access_index));

struct io_mkdir___gh {
	int dfd;
	struct filename *filename;
} __attribute__((preserve_access_index));

struct io_connect___gh {
	void *addr; /* the user's sockaddr (its kernel copy moved between kernel versions) */
	int addr_len;
} __attribute__((preserve_access_index));

struct io_sr_msg___gh {
	u16 flags;
} __attribute__((preserve_access_index));

struct io_splice___gh {
	int splice_fd_in;
	unsigned int flags;
} __attribute__((preserve_access_index));

struct io_async_msghdr___gh {
	struct msghdr msg;
	struct __kernel_sockaddr_storage addr;
} __attribute__((preserve_access_index));

/* Multishot and bundle requests post extra completions without the request (req NULL):
 * their bytes are found by (ring, user_data). */
struct uring_ms_key {
	u64 ctx;
	u64 user_data;
};
struct uring_ms_val {
	u32 slot;
	u32 what; /* GH_STAT_TX or GH_STAT_RX */
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct uring_ms_key);
	__type(value, struct uring_ms_val);
} uring_ms SEC(".maps");

/* Sends submitted with a destination address (request -> its user_data): only they get a
 * completion record (their twin is sendto/sendmsg to an address); a plain send only counts
 * its bytes. LRU: an entry whose completion never came (IOSQE_CQE_SKIP_SUCCESS) ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u64);
} uring_sends SEC(".maps");

/* 1: a file op with a recorded twin, 2: a network op with one, 0: neither */
static __always_inline int uring_twin(u32 op)
{
	switch (op) {
	case GH_IORING_OP_OPENAT:
	case GH_IORING_OP_OPENAT2:
	case GH_IORING_OP_RENAMEAT:
	case GH_IORING_OP_UNLINKAT:
	case GH_IORING_OP_MKDIRAT:
	case GH_IORING_OP_SYMLINKAT:
	case GH_IORING_OP_LINKAT:
	case GH_IORING_OP_FTRUNCATE:
		return 1;
	case GH_IORING_OP_CONNECT:
	case GH_IORING_OP_BIND:
	case GH_IORING_OP_LISTEN:
	case GH_IORING_OP_SEND:
	case GH_IORING_OP_SEND_ZC:
	case GH_IORING_OP_SENDMSG:
	case GH_IORING_OP_SENDMSG_ZC:
		return 2;
	}
	return 0;
}

static __always_inline bool uring_is_send(u32 op)
{
	return op == GH_IORING_OP_SEND || op == GH_IORING_OP_SEND_ZC ||
	       op == GH_IORING_OP_SENDMSG || op == GH_IORING_OP_SENDMSG_ZC;
}

/* slot s+1: the directory a relative path starts from (or, for an fd-only op, the file). */
static __always_inline u32 uring_base(struct gh_event *e, u32 off, int s, int dfd,
				      struct task_struct *task)
{
	struct dentry *d;
	struct vfsmount *m;
	if (dfd == AT_FDCWD) {
		d = BPF_CORE_READ(task, fs, pwd.dentry);
		m = BPF_CORE_READ(task, fs, pwd.mnt);
	} else {
		struct file *f = fd_file(task, dfd);
		if (!f)
			return off;
		d = BPF_CORE_READ(f, f_path.dentry);
		m = BPF_CORE_READ(f, f_path.mnt);
	}
	u32 status = 0;
	u32 dstart = off;
	off = walk_dir(2, off, task, d, m, &status);
	e->str_len[(s + 1) & 3] = off - dstart;
	e->flags |= walk_flags(e, status, s == 0);
	return off;
}

/* A path the kernel copied (struct filename) into slot s, and, when relative, its base dir
 * (the cwd, or dfd's file) walked into slot s+1; like fs_path, from kernel memory. */
static __always_inline u32 uring_path(struct gh_event *e, u32 off, int s, struct filename *fn,
				      int dfd, bool resolve, struct task_struct *task)
{
	u32 start = off;
	BOUND(off, 0x7fff); /* a no-op: slot 2 starts at <= 8192 */
	long n = bpf_probe_read_kernel_str(&e->data[off], GH_PATH_MAX, BPF_CORE_READ(fn, name));
	if (n < 0) {
		e->flags |= s == 0 ? GH_F_UNREAD0 : GH_F_UNREAD2;
		n = 0;
	} else if (n == GH_PATH_MAX) {
		e->flags |= s == 0 ? GH_F_TRUNC0 : GH_F_TRUNC2;
		stat_add(e->slot, GH_STAT_TRUNC, 1);
	}
	off += n;
	e->str_len[s & 3] = off - start;
	if (!resolve || (n > 1 && e->data[start & 0x7fff] == '/'))
		return off;
	return uring_base(e, off, s, dfd, task);
}

/* The submit record of a file op: paths as the twin's FILE record has them. */
static __always_inline u32 uring_file(struct gh_event *e, void *req, u32 op,
				      struct task_struct *task)
{
	if (op == GH_IORING_OP_OPENAT || op == GH_IORING_OP_OPENAT2) {
		struct io_open___gh *o = req;
		e->arg0 = BPF_CORE_READ(o, dfd);
		e->arg1 = BPF_CORE_READ(o, how.flags);
		return uring_path(e, 0, 0, BPF_CORE_READ(o, filename), e->arg0, true, task);
	}
	if (op == GH_IORING_OP_UNLINKAT) {
		struct io_unlink___gh *u = req;
		e->arg0 = BPF_CORE_READ(u, dfd);
		e->arg1 = BPF_CORE_READ(u, flags);
		return uring_path(e, 0, 0, BPF_CORE_READ(u, filename), e->arg0, true, task);
	}
	if (op == GH_IORING_OP_MKDIRAT) {
		struct io_mkdir___gh *m = req;
		e->arg0 = BPF_CORE_READ(m, dfd);
		return uring_path(e, 0, 0, BPF_CORE_READ(m, filename), e->arg0, true, task);
	}
	if (op == GH_IORING_OP_FTRUNCATE) { /* the fd's own file, walked like a directory */
		struct io_kiocb___gh *r = req;
		if (BPF_CORE_READ(r, flags) & GH_IOSQE_FIXED_FILE)
			return 0;
		e->arg0 = BPF_CORE_READ(r, cqe.fd);
		return uring_base(e, 0, 0, e->arg0, task);
	}
	/* renameat, linkat, symlinkat: two paths (a symlink's target stored as given) */
	struct filename *p1, *p2;
	int old_dfd, new_dfd;
	if (op == GH_IORING_OP_RENAMEAT) {
		struct io_rename___gh *r = req;
		old_dfd = BPF_CORE_READ(r, old_dfd);
		new_dfd = BPF_CORE_READ(r, new_dfd);
		p1 = BPF_CORE_READ(r, oldpath);
		p2 = BPF_CORE_READ(r, newpath);
		e->arg1 = BPF_CORE_READ(r, flags);
	} else {
		struct io_link___gh *l = req;
		old_dfd = BPF_CORE_READ(l, old_dfd);
		new_dfd = BPF_CORE_READ(l, new_dfd);
		p1 = BPF_CORE_READ(l, oldpath);
		p2 = BPF_CORE_READ(l, newpath);
		e->arg1 = BPF_CORE_READ(l, flags);
	}
	e->arg0 = old_dfd;
	bool symlink = op == GH_IORING_OP_SYMLINKAT;
	u32 off = uring_path(e, 0, 0, p1, old_dfd, !symlink, task);
	return uring_path(e, off, 2, p2, new_dfd, true, task);
}

/* The submit record of a network op: the address the kernel copied, as the twin's NET
 * record has it. Returns -1 when there is nothing to record (a send without address). */
static __always_inline long uring_net(struct gh_event *e, struct io_kiocb___gh *req, u32 op,
				      struct task_struct *task)
{
	int fd = BPF_CORE_READ(req, cqe.fd);
	e->arg0 = fd;
	if (!(BPF_CORE_READ(req, flags) & GH_IOSQE_FIXED_FILE)) {
		struct sock *sk;
		e->arg1 = sock_kind(task, fd, &sk);
	}
	if (op == GH_IORING_OP_LISTEN || op == GH_IORING_OP_BIND)
		return 0; /* the completion carries the address the socket is bound to */
	if (op == GH_IORING_OP_CONNECT) { /* read like connect(2)'s, once the kernel copied it */
		struct io_connect___gh *c = (void *)req;
		return read_sockaddr(e, BPF_CORE_READ(c, addr), BPF_CORE_READ(c, addr_len));
	}
	struct io_async_msghdr___gh *io = BPF_CORE_READ(req, async_data);
	if (!io || !BPF_CORE_READ(io, msg.msg_name))
		return -1; /* a send on a connected socket: bytes only */
	long len = BPF_CORE_READ(io, msg.msg_namelen);
	if (len <= 0)
		return -1;
	if (len > GH_SOCKADDR_MAX)
		len = GH_SOCKADDR_MAX;
	BOUND(len, 127);
	if (bpf_probe_read_kernel(&e->data[0], len, &io->addr))
		return -1;
	e->str_len[0] = len;
	return len;
}

/* Multishot receives and send bundles post extra completions without the request. */
static __always_inline void uring_multishot(struct io_kiocb___gh *req, u32 op, u32 slot,
					    struct task_struct *task)
{
	struct uring_ms_val val = {.slot = slot};
	if (op == GH_IORING_OP_RECV || op == GH_IORING_OP_RECVMSG) {
		if (!(BPF_CORE_READ((struct io_sr_msg___gh *)req, flags) &
		      (GH_IORING_RECV_MULTISHOT | GH_IORING_RECVSEND_BUNDLE)))
			return;
		val.what = GH_STAT_RX;
	} else if (op == GH_IORING_OP_SEND) {
		if (!(BPF_CORE_READ((struct io_sr_msg___gh *)req, flags) & GH_IORING_RECVSEND_BUNDLE))
			return;
		val.what = GH_STAT_TX;
	} else if (op == GH_IORING_OP_READ_MULTISHOT) {
		if (BPF_CORE_READ(req, flags) & GH_IOSQE_FIXED_FILE ||
		    !is_socket(fd_file(task, BPF_CORE_READ(req, cqe.fd))))
			return;
		val.what = GH_STAT_RX;
	} else {
		return;
	}
	struct uring_ms_key k = {.user_data = BPF_CORE_READ(req, cqe.user_data)};
	k.ctx = (u64)BPF_CORE_READ(req, ctx);
	bpf_map_update_elem(&uring_ms, &k, &val, BPF_ANY);
}

/* The workload's slot for the current process, or -1 (untracked, or harness: *harness set). */
static __always_inline long uring_slot(bool *harness)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	*harness = false;
	if (!maybe_tracked(tgid))
		return -1;
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &tgid);
	if (!v)
		return -1;
	*harness = v->slot & (GH_PENDING | GH_HARNESS);
	return v->slot & GH_SLOT_MASK;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(gh_uring_submit, void *kreq)
{
	bool harness;
	long s = uring_slot(&harness);
	if (s < 0)
		return 0;
	u32 slot = s;
	struct io_kiocb___gh *req = kreq;
	u32 op = BPF_CORE_READ(req, opcode);
	int twin = uring_twin(op);
	if (harness) { /* Glasshouse's own set-up: counted, never recorded */
		if (twin)
			stat_add(slot, twin == 1 ? GH_STAT_HARNESS_FILE : GH_STAT_HARNESS_NET, 1);
		return 0;
	}
	stat_add(slot, GH_STAT_URING + (op < GH_URING_OPS ? op : GH_URING_OPS - 1), 1);
	struct task_struct *task = (void *)bpf_get_current_task();
	uring_multishot(req, op, slot, task);
	if (!twin)
		return 0;
	struct gh_event *e = scratch_event(2);
	if (!e)
		return 0;
	init_event(e, GH_EV_URING, slot);
	e->nr = op | ((BPF_CORE_READ(req, flags) & 0xff) << 8); /* + the sqe's IOSQE_* flags */
	e->ret = (long)kreq;
	u32 off;
	if (twin == 1) {
		off = uring_file(e, kreq, op, task);
	} else {
		long n = uring_net(e, req, op, task);
		if (n < 0)
			return 0;
		off = n;
		if (uring_is_send(op)) {
			u64 id = (u64)kreq;
			u64 ud = BPF_CORE_READ(req, cqe.user_data);
			bpf_map_update_elem(&uring_sends, &id, &ud, BPF_ANY);
		}
	}
	emit(e, GH_HDR_SIZE + off);
	return 0;
}

/* Bytes a completed op moved on a socket. */
static __always_inline void uring_bytes(struct io_kiocb___gh *req, u32 op, s32 res, u32 slot)
{
	u32 what;
	switch (op) {
	case 1:  /* READV */
	case 4:  /* READ_FIXED */
	case 22: /* READ */
	case GH_IORING_OP_READ_MULTISHOT:
	case 60: /* READV_FIXED */
	case GH_IORING_OP_RECV:
	case GH_IORING_OP_RECVMSG:
		what = GH_STAT_RX;
		break;
	case 2:  /* WRITEV */
	case 5:  /* WRITE_FIXED */
	case 23: /* WRITE */
	case 61: /* WRITEV_FIXED */
	case GH_IORING_OP_SEND:
	case GH_IORING_OP_SEND_ZC:
	case GH_IORING_OP_SENDMSG:
	case GH_IORING_OP_SENDMSG_ZC:
		what = GH_STAT_TX;
		break;
	case GH_IORING_OP_SPLICE: { /* req->file is the output; the input is splice_fd_in */
		struct io_splice___gh *sp = (void *)req;
		if (!(BPF_CORE_READ(sp, flags) & GH_SPLICE_F_FD_IN_FIXED)) {
			struct task_struct *task = (void *)bpf_get_current_task();
			sock_bytes(task, BPF_CORE_READ(sp, splice_fd_in), slot, GH_STAT_RX, res);
		}
		what = GH_STAT_TX;
		break;
	}
	default:
		return;
	}
	if (is_socket(BPF_CORE_READ(req, file)))
		stat_add(slot, what, res);
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(gh_uring_complete, void *ctx_, void *kreq, void *kcqe)
{
	bool harness;
	long s = uring_slot(&harness);
	if (s < 0 || harness)
		return 0;
	u32 slot = s;
	struct io_uring_cqe___gh *cqe = kcqe;
	s32 res = BPF_CORE_READ(cqe, res);
	u64 ud = BPF_CORE_READ(cqe, user_data);
	struct uring_ms_key k = {.ctx = (u64)ctx_, .user_data = ud};
	if (!kreq) { /* an extra completion of a multishot request */
		struct uring_ms_val *ms = bpf_map_lookup_elem(&uring_ms, &k);
		if (ms && res > 0)
			stat_add(ms->slot, ms->what, res);
		return 0;
	}
	struct io_kiocb___gh *req = kreq;
	u32 op = BPF_CORE_READ(req, opcode);
	if (res > 0)
		uring_bytes(req, op, res, slot);
	if (!(BPF_CORE_READ(cqe, flags) & GH_IORING_CQE_F_MORE))
		bpf_map_delete_elem(&uring_ms, &k); /* a multishot request's last completion */
	int twin = uring_twin(op);
	if (!twin)
		return 0;
	u64 id = (u64)kreq;
	if (uring_is_send(op)) {
		u64 *want = bpf_map_lookup_elem(&uring_sends, &id);
		if (!want || *want != ud)
			return 0; /* sent without an address: its bytes are counted */
		bpf_map_delete_elem(&uring_sends, &id);
	}
	struct gh_event *e = bpf_ringbuf_reserve(&events, GH_URING_DONE_SIZE, 0);
	if (!e) {
		stat_add(slot, GH_STAT_LOST, 1);
		return 0;
	}
	init_event(e, GH_EV_URING, slot);
	e->flags |= GH_F_DONE;
	e->nr = op;
	e->ret = res;
	e->arg1 = id;
	if (twin == 2) {
		struct sock *sk = NULL;
		struct file *f = BPF_CORE_READ(req, file);
		u64 kind = file_sock_kind(f, &sk);
		e->arg0 = (int)kind;
		if ((op == GH_IORING_OP_LISTEN || op == GH_IORING_OP_BIND) && res == 0 && sk)
			local_sockaddr(e, sk);
	}
	bpf_ringbuf_submit(e, wake_flags());
	stat_add(slot, GH_STAT_EMITTED, 1);
	return 0;
}
