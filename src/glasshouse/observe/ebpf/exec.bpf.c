// SPDX-License-Identifier: GPL-2.0
/* Glasshouse host observer: the one BPF object (exec.o).
 *
 * Seed 003 splits the kernel side into exec.o, fs.o and net.o. We build ONE object from
 * exec.bpf.c, which includes fs.bpf.c, net.bpf.c and uring.bpf.c as sources, because every
 * system-wide syscall then runs one sys_enter and one sys_exit program (not three of each):
 * an untracked process pays one inlined array check per hook (the `maybe` prefilter), and
 * the tracked-tgid map, ring buffer and counters are shared without re-using map fds.
 *
 * Attach points (measured on the target hosts: no kprobes/fentry/LSM, no tracefs):
 *   tp_btf/sched_process_fork|exec|exit  process lifecycle and scope (tracked tgids)
 *   raw_tp/sys_enter                      syscall counts per session
 *   raw_tp/sys_exit                       file and network syscalls, read with their result
 *   tp_btf/inet_sock_set_state            the outcome of connects left in progress (net.bpf.c)
 *   tp_btf/io_uring_submit_req|complete   io_uring operations (uring.bpf.c)
 * User-space strings are read at sys_exit: the kernel has just faulted the pages in.
 * On x86_64 the syscall arguments are still in pt_regs at sys_exit (di, si, dx, r10, r8, r9).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <asm/unistd_64.h>

#include "events.h"

char LICENSE[] SEC("license") = "GPL";

#define AT_FDCWD -100
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Set by the loader before load (.rodata, frozen: the verifier prunes what is off). */
struct gh_config {
	u32 capture_argv;
	u32 wakeup_bytes; /* wake the reader only once this much is waiting (batching) */
	u32 watch;        /* agent mode: execs matching watch_comm/watch_cgroup become roots */
	u32 reserved;
};
const volatile struct gh_config cfg = {.capture_argv = 1, .wakeup_bytes = 1 << 20};

/* tgid -> its session: slot with the role bits (events.h), and generation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct gh_track);
} tracked SEC(".maps");

/* tgid -> 1 while tracked: an exact prefilter (indexed by the tgid itself, sized to
 * pid_max by the loader). Array lookups are inlined by the verifier, so the syscall hooks
 * of every untracked process on the host cost an index, not a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4194304);
	__type(key, u32);
	__type(value, u8);
} maybe SEC(".maps");

static __always_inline bool maybe_tracked(u32 tgid)
{
	u8 *m = bpf_map_lookup_elem(&maybe, &tgid);
	return !m || *m; /* beyond the array (pid_max raised after load): ask the hash */
}

static __always_inline void set_maybe(u32 tgid, u8 on)
{
	u8 *m = bpf_map_lookup_elem(&maybe, &tgid);
	if (m)
		*m = on;
}

/* Agent mode (cfg.watch): an exec whose comm or cgroup (v2 id) is watched starts a new
 * session in the kernel itself, with a slot taken from free_slots (the agent refills it),
 * so nothing the new root does is missed while user space catches up. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, char[16]);
	__type(value, u8);
} watch_comm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u64);
	__type(value, u8);
} watch_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, GH_MAX_SLOTS);
	__type(value, u32);
} free_slots SEC(".maps");

/* Files a session already reported opening, by (dentry, mount, access class): a workload
 * that opens the same file 200,000 times costs one record, not 200,000. LRU: an evicted
 * entry only means a duplicate record, which user space folds away. */
struct seen_key {
	u64 dentry;
	u64 parent;   /* with the name hash: a freed dentry's address reused for another */
	u64 hash_len; /* file cannot hide that file's open (it would need the same name too) */
	u64 mnt;
	u32 gen;
	u32 cls;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct seen_key);
	__type(value, u8);
} seen SEC(".maps");

/* Per-slot launcher binary of a GH_WS_LAUNCHER session (set by user space at start). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GH_MAX_SLOTS);
	__type(key, u32);
	__type(value, struct gh_launch);
} launch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by the loader */
} events SEC(".maps");

/* Per-CPU counters: [slot * GH_STAT_STRIDE + i], i = syscall nr or GH_STAT_*. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GH_MAX_SLOTS * GH_STAT_STRIDE);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

/* Scratch events, three per CPU: [cpu * 3] for sys_exit, [cpu * 3 + 1] for exec, [cpu * 3 + 2]
 * for io_uring submissions (a preempted program must not share its buffer with another one
 * that runs on the same CPU meanwhile).
 * A plain array sized by the loader: per-CPU map values are limited to 32 KiB. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct gh_event);
} scratch SEC(".maps");

static __always_inline struct gh_event *scratch_event(u32 which)
{
	u32 idx = bpf_get_smp_processor_id() * 3 + which;
	return bpf_map_lookup_elem(&scratch, &idx);
}

/* v & mask, done in an asm so clang cannot drop it: after a compare-and-clamp, clang knows
 * the bound but often passes the unclamped register on, and the verifier rejects that. */
#define BOUND(v, mask) asm volatile("%0 &= %1" : "+r"(v) : "i"(mask))

static __always_inline void stat_add(u32 slot, u32 what, u64 n)
{
	if (slot >= GH_MAX_SLOTS)
		return;
	u32 idx = slot * GH_STAT_STRIDE + what;
	u64 *c = bpf_map_lookup_elem(&stats, &idx);
	if (c)
		*c += n;
}

/* Batch reader wake-ups: one per record would cost a context switch per event. The reader
 * also polls every 50 ms and drains on demand, so nothing waits longer than that. */
static __always_inline u64 wake_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(struct gh_event *e, u32 size)
{
	/* sizeof(*e) is 65536: the mask is a no-op for every real size and bounds the length
	 * for the verifier (a compare-and-clamp gets reordered by clang) */
	if (bpf_ringbuf_output(&events, e, size & (sizeof(*e) - 1), wake_flags()))
		stat_add(e->slot, GH_STAT_LOST, 1);
	else
		stat_add(e->slot, GH_STAT_EMITTED, 1);
}

static __always_inline void init_event(struct gh_event *e, u16 type, u32 slot)
{
	u64 id = bpf_get_current_pid_tgid();
	e->type = type;
	e->flags = 0;
	e->slot = slot;
	e->tgid = id >> 32;
	e->tid = (u32)id;
	e->ts_ns = bpf_ktime_get_ns();
	e->ret = 0;
	e->nr = 0;
	e->arg0 = 0;
	e->arg1 = 0;
	e->str_len[0] = e->str_len[1] = e->str_len[2] = e->str_len[3] = 0;
}

/* What a walk found besides the names (walk_dir's *status). */
#define WALK_TRUNC 1u    /* cut at its bound */
#define WALK_UNLINKED 2u /* it started at a dentry with no name left (d_unlinked) */
#define WALK_PSEUDO 4u   /* it ended at a pseudo file's own dentry (memfd, pipe, socket) */

/* Append the directory of `dentry`/`vfsmnt` to e->data[off..], leaf component first, each
 * NUL-terminated, up to the task's root (chroot/pivot_root aware), crossing mounts.
 * Started at a file rather than a dir, the file's own name is the leaf: the walk is then the
 * file's path. A pseudo file (no parent, not a mount's root: memfd, pipe, socket) walks to
 * its own name alone.
 * The loop body runs under bpf_loop() so the verifier checks it once, not per iteration. */
struct walk_ctx {
	u32 scratch_idx;
	u32 off;
	u32 start;
	u32 status;
	u64 mnt_off;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_d;
	struct vfsmount *root_m;
};

static long walk_step(u32 i, struct walk_ctx *w)
{
	/* copy out of the ctx first: BPF_CORE_READ must not relocate our own struct */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	if (dentry == w->root_d && vfsmnt == w->root_m)
		return 1;
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	if (dentry == mnt_root) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt)
			return 1;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->vfsmnt = (void *)parent + w->mnt_off;
		return 0;
	}
	if (!dentry)
		return 1;
	struct dentry *up = BPF_CORE_READ(dentry, d_parent);
	u32 off = w->off;
	if (off > GH_DATA_MAX - GH_NAME_MAX || off - w->start > GH_DIR_MAX - GH_NAME_MAX) {
		w->status |= WALK_TRUNC;
		return 1;
	}
	struct gh_event *e = scratch_event(w->scratch_idx);
	if (!e)
		return 1;
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(&e->data[off], GH_NAME_MAX, name);
	if (n > 0)
		w->off = off + n;
	if (up == dentry) { /* a root that is no mount's root: a pseudo file's own dentry */
		w->status |= WALK_PSEUDO;
		return 1;
	}
	w->dentry = up;
	if (i == GH_DIR_DEPTH - 1)
		w->status |= WALK_TRUNC; /* deeper than we walk */
	return 0;
}

static __always_inline u32 walk_dir(u32 scratch_idx, u32 off, struct task_struct *task,
				    struct dentry *dentry, struct vfsmount *vfsmnt, u32 *status)
{
	struct walk_ctx w = {};
	/* d_unlinked(): unhashed and not a root (an O_TMPFILE file, a deleted file or dir) */
	if (dentry && !BPF_CORE_READ(dentry, d_hash.pprev) && BPF_CORE_READ(dentry, d_parent) != dentry)
		w.status = WALK_UNLINKED;
	w.scratch_idx = scratch_idx;
	w.off = off;
	w.start = off;
	w.mnt_off = bpf_core_field_offset(struct mount, mnt);
	w.dentry = dentry;
	w.vfsmnt = vfsmnt;
	w.mnt = (void *)vfsmnt - w.mnt_off;
	w.root_d = BPF_CORE_READ(task, fs, root.dentry);
	w.root_m = BPF_CORE_READ(task, fs, root.mnt);
	bpf_loop(GH_DIR_DEPTH, walk_step, &w, 0);
	*status = w.status;
	return w.off;
}

/* The record flags for a walk's status in slot 1 (dir1) or slot 3; a cut walk is counted. */
static __always_inline u16 walk_flags(struct gh_event *e, u32 status, bool dir1)
{
	u16 f = dir1 ? GH_F_DIR1 : GH_F_DIR3;
	if (status & WALK_TRUNC) {
		f |= dir1 ? GH_F_TRUNC1 : GH_F_TRUNC3;
		stat_add(e->slot, GH_STAT_TRUNC, 1);
	}
	if (status & WALK_UNLINKED)
		f |= dir1 ? GH_F_UNLINKED1 : GH_F_UNLINKED3;
	if (status & WALK_PSEUDO)
		f |= dir1 ? GH_F_PSEUDO1 : GH_F_PSEUDO3;
	return f;
}

static __always_inline struct file *fd_file(struct task_struct *task, int fd)
{
	struct file *f = NULL;
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline bool is_socket(struct file *f)
{
	if (!f)
		return false;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & S_IFMT) == S_IFSOCK;
}

#include "fs.bpf.c"
#include "net.bpf.c"
#include "uring.bpf.c"

/* ---- process lifecycle -------------------------------------------------------------- */

/* The pid as the task's own pid namespace sees it (a sandbox's pids), for ProcessNode.ns_pid. */
static __always_inline u32 ns_pid_of(struct task_struct *t)
{
	struct pid *pid = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid up = {};
	bpf_probe_read_kernel(&up, sizeof(up), &pid->numbers[level & 31]);
	return up.nr;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(gh_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = BPF_CORE_READ(parent, tgid);
	u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid) /* a thread, not a process */
		return 0;
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &ptgid);
	if (!v)
		return 0;
	struct gh_track val = *v;
	u32 slot = val.slot & GH_SLOT_MASK;
	if (val.slot & (GH_LAUNCHER | GH_ARMED)) /* the launcher's children exec the workload */
		val.slot = (val.slot & ~GH_LAUNCHER) | GH_ARMED;
	if (bpf_map_update_elem(&tracked, &ctgid, &val, BPF_ANY)) {
		stat_add(slot, GH_STAT_LOST, 1); /* tracked map full: this child is unobserved */
		return 0;
	}
	set_maybe(ctgid, 1);
	struct gh_event *e = bpf_ringbuf_reserve(&events, GH_HDR_SIZE, 0);
	if (!e) {
		stat_add(slot, GH_STAT_LOST, 1);
		return 0;
	}
	init_event(e, GH_EV_FORK, slot);
	if (val.slot & (GH_PENDING | GH_HARNESS))
		e->flags |= GH_F_HARNESS;
	e->tgid = ptgid;
	e->nr = ctgid;
	e->arg0 = BPF_CORE_READ(child, real_parent, tgid);
	e->arg1 = ns_pid_of(child);
	bpf_ringbuf_submit(e, wake_flags());
	stat_add(slot, GH_STAT_EMITTED, 1);
	return 0;
}

static __always_inline bool is_exec(long nr)
{
	return nr == __NR_execve || nr == __NR_execveat;
}

/* Whether a harness process's next exec may start the workload. */
static __always_inline bool may_start(u32 val)
{
	if (val & GH_ARMED)
		return true;
	return (val & GH_PENDING) && ((val & GH_WS_MASK) >> GH_WS_SHIFT) == GH_WS_ROOT_EXEC;
}

/* A process's role bits after it exec'd bprm's file (events.h: workload vs harness). */
static __always_inline u32 exec_role(u32 val, struct linux_binprm *bprm)
{
	u32 mode = (val & GH_WS_MASK) >> GH_WS_SHIFT;
	if (val & GH_PENDING) { /* the root's first exec */
		val &= ~GH_PENDING;
		if (mode == GH_WS_ROOT_EXEC)
			return val; /* the workload starts here */
		val |= GH_HARNESS;
	}
	if (!(val & GH_HARNESS) || mode != GH_WS_LAUNCHER)
		return val;
	u32 slot = val & GH_SLOT_MASK;
	struct gh_launch *l = bpf_map_lookup_elem(&launch, &slot);
	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	bool is_launcher = l && l->ino && BPF_CORE_READ(ino, i_ino) == l->ino &&
			   BPF_CORE_READ(ino, i_sb, s_dev) == l->dev;
	if (is_launcher)
		return (val & ~GH_ARMED) | GH_LAUNCHER;
	if (val & GH_ARMED) /* a child of the launcher exec'd the user's command */
		return val & ~(GH_HARNESS | GH_ARMED | GH_LAUNCHER);
	return val & ~GH_LAUNCHER;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(gh_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 tgid = BPF_CORE_READ(p, tgid);
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &tgid);
	u16 root_flag = 0;
	if (!v) {
		if (!cfg.watch)
			return 0;
		char comm[16] = {};
		bpf_get_current_comm(comm, sizeof(comm));
		u64 cg = bpf_get_current_cgroup_id();
		if (!bpf_map_lookup_elem(&watch_comm, comm) && !bpf_map_lookup_elem(&watch_cgroup, &cg))
			return 0;
		struct gh_track t = {};
		if (bpf_map_pop_elem(&free_slots, &t.slot)) {
			stat_add(0, GH_STAT_LOST, 1); /* every slot busy: slot 0 counts skipped roots */
			return 0;
		}
		t.gen = 0x80000000u | ((u32)bpf_ktime_get_ns() ^ tgid);
		if (bpf_map_update_elem(&tracked, &tgid, &t, BPF_ANY)) {
			bpf_map_push_elem(&free_slots, &t.slot, 0);
			return 0;
		}
		set_maybe(tgid, 1);
		v = bpf_map_lookup_elem(&tracked, &tgid);
		if (!v)
			return 0;
		root_flag = GH_F_ROOT;
	}
	u32 was = v->slot;
	u32 val = exec_role(was, bprm);
	v->slot = val;
	u32 slot = val & GH_SLOT_MASK;
	if (may_start(was)) { /* its exec syscall was left uncounted at sys_enter */
		long enr = BPF_CORE_READ((struct pt_regs *)bpf_task_pt_regs(p), orig_ax);
		u32 idx = enr >= 0 && enr < GH_NR_SYSCALLS ? (u32)enr : GH_STAT_UNKNOWN_NR;
		stat_add(slot, val & GH_HARNESS ? GH_STAT_HARNESS_SYS : idx, 1);
	}
	struct gh_event *e = scratch_event(1);
	if (!e)
		return 0;
	init_event(e, GH_EV_EXEC, slot);
	e->flags |= root_flag;
	if (val & GH_HARNESS)
		e->flags |= GH_F_HARNESS;
	e->arg1 = v->gen;
	e->arg0 = ns_pid_of(p);
	e->nr = BPF_CORE_READ(p, real_parent, tgid);
	u32 off = 0;

	/* bprm->interp: the binary that runs (for a #! script, its interpreter; else filename) */
	long n = bpf_probe_read_kernel_str(&e->data[0], GH_PATH_MAX, BPF_CORE_READ(bprm, interp));
	if (n < 0) {
		n = 0;
		e->flags |= GH_F_UNREAD0;
	} else if (n == GH_PATH_MAX) {
		e->flags |= GH_F_TRUNC0;
		stat_add(slot, GH_STAT_TRUNC, 1);
	}
	off = n;
	e->str_len[0] = off;

	u32 start = off;
	u32 status = 0;
	off = walk_dir(1, off, p, BPF_CORE_READ(p, fs, pwd.dentry), BPF_CORE_READ(p, fs, pwd.mnt),
		       &status);
	e->str_len[1] = off - start;
	e->flags |= walk_flags(e, status, true);

	if (cfg.capture_argv) {
		struct mm_struct *mm = BPF_CORE_READ(p, mm);
		unsigned long as = BPF_CORE_READ(mm, arg_start);
		unsigned long ae = BPF_CORE_READ(mm, arg_end);
		u64 len = ae > as ? ae - as : 0;
		if (len > GH_ARGV_MAX - 1) {
			len = GH_ARGV_MAX - 1;
			e->flags |= GH_F_TRUNC2;
			stat_add(slot, GH_STAT_TRUNC, 1);
		}
		BOUND(off, 0x7fff); /* a no-op: slots 0+1 hold <= 8192 bytes */
		BOUND(len, GH_ARGV_MAX - 1); /* a no-op after the clamp */
		if (len && bpf_probe_read_user(&e->data[off], len, (void *)as) == 0) {
			e->str_len[2] = len;
			off += len;
		} else if (len) {
			e->flags |= GH_F_UNREAD2;
			stat_add(slot, GH_STAT_TRUNC, 1);
		}
	}

	/* bprm->file: the file the kernel executed, where it really is (a symlink, a PATH
	 * lookup or /proc/self/exe resolved; a memfd's own name; for #!, the interpreter) */
	struct file *bf = BPF_CORE_READ(bprm, file);
	start = off;
	status = 0;
	off = walk_dir(1, off, p, BPF_CORE_READ(bf, f_path.dentry), BPF_CORE_READ(bf, f_path.mnt),
		       &status);
	e->str_len[3] = off - start;
	e->flags |= walk_flags(e, status, false);
	emit(e, GH_HDR_SIZE + off);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(gh_exit, struct task_struct *p)
{
	u32 tgid = BPF_CORE_READ(p, tgid);
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &tgid);
	if (!v)
		return 0;
	if (BPF_CORE_READ(p, signal, live.counter) != 0) /* other threads live on */
		return 0;
	u32 val = v->slot;
	u32 slot = val & GH_SLOT_MASK;
	bpf_map_delete_elem(&tracked, &tgid);
	set_maybe(tgid, 0);
	struct gh_event *e = bpf_ringbuf_reserve(&events, GH_HDR_SIZE, 0);
	if (!e) {
		stat_add(slot, GH_STAT_LOST, 1);
		return 0;
	}
	init_event(e, GH_EV_EXIT, slot);
	if (val & (GH_PENDING | GH_HARNESS))
		e->flags |= GH_F_HARNESS;
	e->tgid = tgid;
	e->ret = BPF_CORE_READ(p, exit_code);
	e->arg0 = BPF_CORE_READ(p, signal, maxrss) * (4096 / 1024);
	e->arg1 = BPF_CORE_READ(p, signal, utime) + BPF_CORE_READ(p, signal, stime) +
		  BPF_CORE_READ(p, utime) + BPF_CORE_READ(p, stime);
	bpf_ringbuf_submit(e, wake_flags());
	stat_add(slot, GH_STAT_EMITTED, 1);
	return 0;
}

/* ---- syscalls ----------------------------------------------------------------------- */

SEC("raw_tp/sys_enter")
int gh_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!maybe_tracked(tgid))
		return 0;
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &tgid);
	if (!v)
		return 0;
	long nr = ctx->args[1];
	u32 val = v->slot;
	u32 slot = val & GH_SLOT_MASK;
	if (val & (GH_PENDING | GH_HARNESS)) {
		/* an exec that may start the workload is counted once it returned: as the
		 * workload's (gh_exec) or, when it failed, as the harness's (harness_exit) */
		if (!(is_exec(nr) && may_start(val)))
			stat_add(slot, GH_STAT_HARNESS_SYS, 1);
		return 0;
	}
	if (nr >= 0 && nr < GH_NR_SYSCALLS)
		stat_add(slot, (u32)nr, 1);
	else
		stat_add(slot, GH_STAT_UNKNOWN_NR, 1);
	return 0;
}

/* A harness process's file or network syscall: counted, never recorded as the workload's. */
static __always_inline void harness_exit(struct pt_regs *regs, long nr, long ret, u32 val)
{
	u32 slot = val & GH_SLOT_MASK;
	struct fs_args a;
	if (fs_decode(regs, nr, &a)) {
		if (is_exec(nr) && ret == 0)
			return; /* a successful exec is counted by gh_exec */
		stat_add(slot, GH_STAT_HARNESS_FILE, 1);
		if (is_exec(nr) && may_start(val))
			stat_add(slot, GH_STAT_HARNESS_SYS, 1); /* left uncounted at sys_enter */
		return;
	}
	switch (nr) {
	case __NR_connect:
	case __NR_bind:
	case __NR_listen:
	case __NR_sendto:
	case __NR_sendmsg:
	case __NR_sendmmsg:
		stat_add(slot, GH_STAT_HARNESS_NET, 1);
	}
}

SEC("raw_tp/sys_exit")
int gh_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!maybe_tracked(tgid))
		return 0;
	struct gh_track *v = bpf_map_lookup_elem(&tracked, &tgid);
	if (!v)
		return 0;
	u32 slot = v->slot & GH_SLOT_MASK;
	u32 gen = v->gen;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = ctx->args[1];
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (v->slot & (GH_PENDING | GH_HARNESS)) {
		harness_exit(regs, nr, ret, v->slot);
		return 0;
	}

	switch (nr) {
	case __NR_read:
	case __NR_readv:
	case __NR_pread64:
	case __NR_write:
	case __NR_writev:
	case __NR_pwrite64:
		if (ret > 0) {
			struct task_struct *task = (void *)bpf_get_current_task();
			if (is_socket(fd_file(task, (int)BPF_CORE_READ(regs, di)))) {
				bool rx = nr == __NR_read || nr == __NR_readv || nr == __NR_pread64;
				stat_add(slot, rx ? GH_STAT_RX : GH_STAT_TX, ret);
			}
		}
		return 0;
	case __NR_recvfrom:
	case __NR_recvmsg:
		if (ret > 0)
			stat_add(slot, GH_STAT_RX, ret);
		return 0;
	}
	if (fs_exit(ctx, regs, nr, ret, slot, gen))
		return 0;
	net_exit(ctx, regs, nr, ret, slot);
	return 0;
}
