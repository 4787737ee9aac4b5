/* Event records shared by the BPF programs (exec.bpf.c + fs.bpf.c + net.bpf.c) and the
 * Python decoder (glasshouse/observe/ebpf/_decode.py mirrors these layouts with struct).
 *
 * Every record is a fixed 56-byte header followed by up to four variable-length strings
 * ("slots"), packed back to back; str_len[i] says how many bytes slot i holds (0 = absent).
 * Slot strings are NUL-terminated when they came from a *_str read; a "dir" slot holds the
 * components of a directory walked in the kernel, leaf first, each NUL-terminated.
 */
#ifndef GLASSHOUSE_EVENTS_H
#define GLASSHOUSE_EVENTS_H

#define GH_MAX_SLOTS 64          /* concurrent sessions (runs) one loaded observer tracks */
#define GH_NR_SYSCALLS 512       /* syscall numbers counted per session */
#define GH_STAT_LOST (GH_NR_SYSCALLS + 0)      /* events the ring buffer had no room for */
#define GH_STAT_TRUNC (GH_NR_SYSCALLS + 1)     /* strings/walks cut at their bound */
#define GH_STAT_TX (GH_NR_SYSCALLS + 2)        /* bytes sent on sockets */
#define GH_STAT_RX (GH_NR_SYSCALLS + 3)        /* bytes received on sockets */
#define GH_STAT_EMITTED (GH_NR_SYSCALLS + 4)   /* events written to the ring buffer */
#define GH_STAT_UNKNOWN_NR (GH_NR_SYSCALLS + 5) /* syscalls with nr >= GH_NR_SYSCALLS */
#define GH_STAT_HARNESS_SYS (GH_NR_SYSCALLS + 6)   /* syscalls of harness processes */
#define GH_STAT_HARNESS_FILE (GH_NR_SYSCALLS + 7)  /* their file syscalls (not recorded) */
#define GH_STAT_HARNESS_NET (GH_NR_SYSCALLS + 8)   /* their network syscalls (not recorded) */
#define GH_URING_OPS 64                        /* io_uring opcodes counted (IORING_OP_*) */
#define GH_STAT_URING (GH_NR_SYSCALLS + 16)    /* .. + GH_URING_OPS: io_uring ops submitted */
#define GH_STAT_ASYNC_EMITTED (GH_NR_SYSCALLS + 80) /* events written from softirq-capable */
#define GH_STAT_ASYNC_LOST (GH_NR_SYSCALLS + 81)    /* programs (atomic adds, own slots) */
#define GH_STAT_URING_SETUP (GH_NR_SYSCALLS + 82)   /* io_uring_setup calls seen at sys_exit,
                                                     * also those a seccomp filter refused
                                                     * (sys_enter never sees them) */
#define GH_STAT_STRIDE (GH_NR_SYSCALLS + 96)

#define GH_PATH_MAX 4096         /* one user path (PATH_MAX) */
#define GH_DIR_MAX 4096          /* one directory walked in the kernel */
#define GH_ARGV_MAX 16384        /* argv bytes kept per exec */
#define GH_DIR_DEPTH 48          /* components walked per directory */
#define GH_NAME_MAX 256
#define GH_SOCKADDR_MAX 112      /* sizeof(struct sockaddr_un) rounded up */
#define GH_DATA_MAX (65536 - 56) /* the whole record is 64 KiB: masks bound offsets */

/* The tracked map's value: the session slot with the process's role bits, and the session's
 * generation (unique per session, never reused, unlike slots).
 *
 * Workload vs harness: everything Glasshouse runs to set a run up (the process backend's
 * pre-exec code, bwrap, glasshouse-init before it execs the command, runsc, the VMM) is
 * harness; its syscalls are only counted (GH_STAT_HARNESS_*), never recorded as the
 * workload's. A session's GH_WS_* mode (set by user space on the root) says where the
 * workload starts; children inherit the value at fork. */
#define GH_SLOT_MASK 0x0000ffff
#define GH_PENDING 0x80000000u   /* root seeded, first exec not seen yet: harness */
#define GH_HARNESS 0x40000000u   /* a harness process */
#define GH_LAUNCHER 0x20000000u  /* harness running the launcher binary: its children arm */
#define GH_ARMED 0x10000000u     /* harness whose next exec (not of the launcher) is the workload */
#define GH_WS_SHIFT 24           /* bits 24-25: the session's mode */
#define GH_WS_MASK (3u << GH_WS_SHIFT)
#define GH_WS_ROOT_EXEC 0        /* the root's first exec starts the workload (process backend) */
#define GH_WS_LAUNCHER 1         /* the root's exec is harness; an exec by a child of a process
                                  * running the launcher (launch map) starts the workload */
#define GH_WS_NONE 2             /* every process is harness (gVisor's runsc, a VMM) */

/* Per-slot launcher binary for GH_WS_LAUNCHER: (kernel dev_t, inode) of the exec'd file. */
struct gh_launch {
	unsigned int dev;
	unsigned int pad;
	unsigned long long ino;
};

struct gh_track {
	unsigned int slot;
	unsigned int gen;
};

enum gh_event_type {
	GH_EV_FORK = 1,   /* a tracked process created a process (not a thread) */
	GH_EV_EXEC = 2,   /* slot0 binary as named (bprm->interp), slot1 cwd (dir), slot2 argv
	                   * (NUL separated), slot3 the file the kernel executed (bprm->file, a
	                   * dir walk with the file's own name as its leaf) */
	GH_EV_EXIT = 3,   /* the last thread of a tracked process exited */
	GH_EV_FILE = 4,   /* a file syscall returned: slot0 path, slot1 its base dir,
	                   * slot2 second path, slot3 its base dir. A successful open (an fd
	                   * came back) has slot0 empty and slot1 the opened file itself, walked
	                   * from the new fd (symlinks and /proc/self/fd/N magic links resolved),
	                   * except for a pseudo file (pipe, socket, memfd): then the name given */
	GH_EV_NET = 5,    /* connect/bind/listen/sendto/sendmsg/sendmmsg returned: slot0 sockaddr;
	                   * a connect (or fast-open send) left in progress carries its socket id
	                   * (u64) in slot1, and a GH_EV_CONN record follows with its outcome */
	GH_EV_CONN = 6,   /* that connection's outcome: ret 0 (connected) or -errno (-EINPROGRESS:
	                   * closed before the handshake finished), arg1 the socket id, nr the
	                   * TCP state it went to; tgid is the process that connected */
	GH_EV_URING = 7,  /* an io_uring operation: nr = IORING_OP_*, arg1/ret = the request id.
	                   * Submitted (no GH_F_DONE): laid out like its syscall twin's FILE or NET
	                   * record, with the request id in ret. Completed (GH_F_DONE): ret = the
	                   * result, arg1 = the request id, arg0 = socket type|family for network
	                   * ops, slot0 the local address after a listen */
};

/* flags */
#define GH_F_TRUNC0 (1u << 0)    /* slot i was cut at its bound (or unreadable) */
#define GH_F_TRUNC1 (1u << 1)
#define GH_F_TRUNC2 (1u << 2)
#define GH_F_TRUNC3 (1u << 3)
#define GH_F_DIR1 (1u << 4)      /* slot1 is a kernel-walked dir */
#define GH_F_DIR3 (1u << 5)      /* slot3 is a kernel-walked dir */
#define GH_F_UNREAD0 (1u << 6)   /* slot0 user memory could not be read */
#define GH_F_UNREAD2 (1u << 7)
#define GH_F_ROOT (1u << 8)      /* EXEC: agent mode made this process a new session root */
#define GH_F_HARNESS (1u << 9)   /* FORK/EXEC/EXIT: the process (FORK: the child) is harness */
#define GH_F_UNLINKED1 (1u << 10) /* slot1's walk started at a dentry with no name left: an
                                   * O_TMPFILE file not linked yet, a deleted file or dir */
#define GH_F_UNLINKED3 (1u << 11)
#define GH_F_PSEUDO1 (1u << 12)  /* slot1's walk is a pseudo file's own name (memfd:NAME, a pipe,
                                  * a socket): in no directory tree */
#define GH_F_PSEUDO3 (1u << 13)
#define GH_F_FASTOPEN (1u << 14) /* NET sendto/sendmsg: MSG_FASTOPEN, a TCP connect with data */
#define GH_F_DONE (1u << 15)     /* URING: the completion (else the submission) */

struct gh_event {
	unsigned short type;
	unsigned short flags;
	unsigned int slot;          /* session slot */
	unsigned int tgid;
	unsigned int tid;
	unsigned long long ts_ns;   /* CLOCK_MONOTONIC */
	long long ret;              /* syscall return, or exit code (wait status) for EXIT */
	unsigned int nr;            /* syscall number; child tgid for FORK; ppid for EXEC */
	int arg0;                   /* fd or dirfd; exit: max rss kB */
	unsigned long long arg1;    /* open flags / socket type|family<<16|protocol<<32 / cpu ns */
	unsigned short str_len[4];
	unsigned char data[GH_DATA_MAX];
};

#define GH_HDR_SIZE 56

#endif
