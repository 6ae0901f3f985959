/* Runs a program as on a kernel without membarrier (before Linux 4.14, or under a seccomp filter
 * that leaves it out): a seccomp filter makes every membarrier call fail with ENOSYS, for the
 * program and everything it starts. The library then takes its fallback: atomics for the quota
 * credit, and owners that fence their own brackets so that other threads' heaps can be visited.
 * Not linked against the library.
 *
 * Usage: no_membarrier program [arguments...] */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "no_membarrier: add this architecture's AUDIT_ARCH_ value"
#endif

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: no_membarrier program [arguments...]\n");
        return 2;
    }
    struct sock_filter filter[] = {
        /* A call made under another architecture's numbers is let through untouched. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    /* Without privileges a filter may only be installed once new ones are refused for good. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        perror("no_membarrier: installing the seccomp filter");
        return 2;
    }
    if (syscall(SYS_membarrier, 0, 0, 0) != -1 || errno != ENOSYS) {
        fprintf(stderr, "no_membarrier: membarrier still answers under the filter\n");
        return 2;
    }
    execvp(argv[1], argv + 1);
    perror("no_membarrier: exec");
    return 127;
}
