// SPDX-License-Identifier: GPL-2.0
/* File syscalls, handled at sys_exit. Included by exec.bpf.c (one object, see there).
 *
 * Each syscall is normalized to (path1, dirfd1, path2, dirfd2): one code path reads the
 * user paths and, for a relative one, walks its base directory in the kernel (the cwd for
 * AT_FDCWD, else the dirfd's file), so user space gets absolute paths without tracking
 * chdir/fchdir/dup/fd inheritance. Absolute paths cost no walk at all, except that a
 * successful open is reported by the file it reached: one walk from the new fd (a file
 * already reported by the session costs nothing, see `seen`).
 */

struct fs_args {
	const char *p1;
	const char *p2;
	int dfd1;
	int dfd2;
	u64 flags;
	bool raw1;   /* path1 is a symlink target: stored as given, never resolved */
	bool fdonly; /* no path: the object is dfd1's file itself (ftruncate) */
};

static __always_inline bool fs_decode(struct pt_regs *regs, long nr, struct fs_args *a)
{
	unsigned long di = BPF_CORE_READ(regs, di);
	unsigned long si = BPF_CORE_READ(regs, si);
	unsigned long dx = BPF_CORE_READ(regs, dx);
	a->dfd1 = a->dfd2 = AT_FDCWD;
	a->p1 = a->p2 = NULL;
	a->flags = 0;
	a->raw1 = false;
	a->fdonly = false;
	switch (nr) {
	case __NR_open:
		a->p1 = (void *)di;
		a->flags = si;
		return true;
	case __NR_creat:
		a->p1 = (void *)di;
		a->flags = 01 | 0100 | 01000; /* O_WRONLY|O_CREAT|O_TRUNC */
		return true;
	case __NR_openat:
		a->dfd1 = di;
		a->p1 = (void *)si;
		a->flags = dx;
		return true;
	case __NR_openat2: {
		u64 flags = 0;
		a->dfd1 = di;
		a->p1 = (void *)si;
		bpf_probe_read_user(&flags, sizeof(flags), (void *)dx); /* open_how.flags */
		a->flags = flags;
		return true;
	}
	case __NR_mknod:
		a->p1 = (void *)di;
		a->flags = si; /* the mode: S_IFIFO, S_IFCHR, ... */
		return true;
	case __NR_mknodat:
		a->dfd1 = di;
		a->p1 = (void *)si;
		a->flags = dx;
		return true;
	case __NR_open_by_handle_at:
		a->dfd1 = di; /* the mount's fd: the file is known from the fd that comes back */
		a->fdonly = true;
		a->flags = dx;
		return true;
	case __NR_truncate:
	case __NR_unlink:
	case __NR_rmdir:
	case __NR_mkdir:
	case __NR_chdir:
	case __NR_execve:
		a->p1 = (void *)di;
		return true;
	case __NR_ftruncate:
	case __NR_fchdir:
		a->dfd1 = di;
		a->fdonly = true;
		return true;
	case __NR_unlinkat:
		a->dfd1 = di;
		a->p1 = (void *)si;
		a->flags = dx; /* AT_REMOVEDIR */
		return true;
	case __NR_mkdirat:
	case __NR_execveat:
		a->dfd1 = di;
		a->p1 = (void *)si;
		return true;
	case __NR_rename:
	case __NR_link:
		a->p1 = (void *)di;
		a->p2 = (void *)si;
		return true;
	case __NR_renameat:
	case __NR_renameat2:
	case __NR_linkat:
		a->dfd1 = di;
		a->p1 = (void *)si;
		a->dfd2 = dx;
		a->p2 = (void *)BPF_CORE_READ(regs, r10);
		if (nr != __NR_renameat) /* RENAME_EXCHANGE..., AT_EMPTY_PATH|AT_SYMLINK_FOLLOW */
			a->flags = BPF_CORE_READ(regs, r8);
		return true;
	case __NR_symlink:
		a->p1 = (void *)di; /* the target: stored as given, never resolved */
		a->p2 = (void *)si;
		a->raw1 = true;
		return true;
	case __NR_symlinkat:
		a->p1 = (void *)di;
		a->dfd2 = si;
		a->p2 = (void *)dx;
		a->raw1 = true;
		return true;
	}
	return false;
}

/* Read one user path into slot `s` (0 or 2) and, when relative, its base dir into s+1. */
static __always_inline u32 fs_path(struct gh_event *e, u32 off, int s, const char *up, int dfd,
				   bool resolve, bool fdonly, struct task_struct *task)
{
	u32 start = off;
	if (!fdonly) {
		BOUND(off, 0x7fff); /* a no-op: slot 2 starts at <= 8192 */
		long n = bpf_probe_read_user_str(&e->data[off], GH_PATH_MAX, up);
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
	}
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
	off = walk_dir(0, off, task, d, m, &status);
	e->str_len[(s + 1) & 3] = off - dstart;
	e->flags |= walk_flags(e, status, s == 0);
	return off;
}

/* A successful open: the file it reached, walked from the new fd's struct file into slot 1
 * (slot 0 stays empty), so a name through a symlink or a magic link (/proc/self/fd/N of an
 * O_PATH fd, /dev/fd/N, /proc/self/root/...) is reported where the file really is. False
 * for a pseudo file (pipe, socket, memfd: in no directory tree): the caller reports the
 * name the workload gave. */
static __always_inline bool fs_opened(struct gh_event *e, struct file *f, struct task_struct *task,
				      u32 *off)
{
	u32 status = 0;
	u32 end = walk_dir(0, 0, task, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt),
			   &status);
	if (status & WALK_PSEUDO)
		return false;
	e->str_len[1] = end;
	e->flags |= walk_flags(e, status, true);
	*off = end;
	return true;
}

static __always_inline bool fs_exit(struct bpf_raw_tracepoint_args *ctx, struct pt_regs *regs,
				    long nr, long ret, u32 slot, u32 gen)
{
	struct fs_args a;
	if (!fs_decode(regs, nr, &a))
		return false;
	if ((nr == __NR_execve || nr == __NR_execveat) && ret == 0)
		return true; /* a successful exec is reported by sched_process_exec */
	struct task_struct *task = (void *)bpf_get_current_task();
	bool is_open = nr == __NR_open || nr == __NR_openat || nr == __NR_openat2 ||
		       nr == __NR_creat || nr == __NR_open_by_handle_at;
	struct file *f = NULL;
	if (is_open && ret >= 0) {
		/* O_PATH: a lookup, not a read or a write; O_TMPFILE: a file with no name (it is
		 * reported when linkat gives it one) */
		if (a.flags & (010000000 | 020000000))
			return true;
		f = fd_file(task, (int)ret);
		if (f) {
			struct seen_key k = {};
			struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
			k.dentry = (u64)d;
			k.parent = (u64)BPF_CORE_READ(d, d_parent);
			k.hash_len = BPF_CORE_READ(d, d_name.hash_len);
			k.mnt = (u64)BPF_CORE_READ(f, f_path.mnt);
			k.gen = gen;
			k.cls = (a.flags & 3) | ((a.flags & (0100 | 01000)) ? 4 : 0);
			u8 one = 1;
			if (bpf_map_lookup_elem(&seen, &k))
				return true; /* this session already reported this file this way */
			bpf_map_update_elem(&seen, &k, &one, BPF_ANY);
		}
	}
	struct gh_event *e = scratch_event(0);
	if (!e)
		return true;
	init_event(e, GH_EV_FILE, slot);
	e->nr = nr;
	e->ret = ret;
	e->arg0 = a.dfd1;
	e->arg1 = a.flags;
	u32 off = 0;
	if (f && fs_opened(e, f, task, &off)) {
		emit(e, GH_HDR_SIZE + off);
		return true;
	}
	off = fs_path(e, 0, 0, a.p1, a.dfd1, !a.raw1, a.fdonly, task);
	if (a.p2) {
		off = fs_path(e, off, 2, a.p2, a.dfd2, true, false, task);
	}
	emit(e, GH_HDR_SIZE + off);
	return true;
}
