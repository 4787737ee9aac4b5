/* glasshouse-init: PID 1 of a Glasshouse sandbox (bwrap --as-pid-1, or gVisor's container).
 *
 * Why it exists: bubblewrap's own PID 1 (and runsc) turn "the command was killed by signal N"
 * into "exit code 128+N", so a receipt could not tell `kill -9 $$` from `exit 137`. This init
 * runs the command as its child, reaps every orphan the command leaves (it is PID 1), and when
 * the command ends writes its raw wait status as one JSON document to argv[1] (an inherited fd
 * number, or an absolute path to create), then exits, which makes the kernel kill whatever else
 * is left in the PID namespace.
 *
 * usage: glasshouse-init STATUS_FD|/STATUS_PATH COMMAND [ARG...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: glasshouse-init STATUS_FD|/STATUS_PATH COMMAND [ARG...]\n");
        return 125;
    }
    int status_fd;
    if (argv[1][0] == '/')
        status_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    else
        status_fd = atoi(argv[1]);
    pid_t child = fork();
    if (child < 0) {
        perror("glasshouse-init: fork");
        return 125;
    }
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (status_fd >= 0)
            close(status_fd);
        execvp(argv[2], argv + 2);
        int err = errno;
        fprintf(stderr, "glasshouse-init: %s: %s\n", argv[2], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return 125;
        }
        if (pid != child)
            continue; /* an orphan reparented to us: reaped, nothing else to do */
        dprintf(status_fd, "{\"wait-status\": %d}\n", status);
        close(status_fd);
        if (WIFEXITED(status))
            return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
    }
}
