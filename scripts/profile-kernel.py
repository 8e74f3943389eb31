"""A profile's samples by the system call they ran in, for scripts/profile-clicks.

Reads `perf script -F ip,sym` of a profile recorded with call graphs (`perf record -g`) on
standard input. Each sample is charged to the first system call found walking its stack from the
leaf: `writev` then counts the loopback delivery to the client that the server's core runs
inside it, and `epoll_wait` the sleeps and wake-ups of a server with nothing to do. A sample in
the kernel under no system call named below counts as "other system calls" (under a system call
entry) or "interrupts and page faults"; the rest is "user space". Prints each share of all the
samples, largest first.
"""

import collections
import sys

# Kernel functions that name the system call a stack is in (the syscall wrappers are inlined
# into do_syscall_64 on some kernels, so the work functions stand for them). `close` releases
# the socket inside the call on Linux 6.7 and later; before that the release runs as task work
# after the call and lands in "other system calls".
SYSCALLS = {
    "do_writev": "writev",
    "__x64_sys_writev": "writev",
    "ksys_write": "write",
    "__x64_sys_write": "write",
    "__sys_recvfrom": "recvfrom",
    "__sys_sendto": "sendto",
    "__sys_shutdown": "shutdown",
    "__sys_accept4": "accept4",
    "__x64_sys_close": "close",
    "__x64_sys_epoll_ctl": "epoll_ctl",
    "do_epoll_wait": "epoll_wait",
    "__x64_sys_epoll_wait": "epoll_wait",
    "__sys_setsockopt": "setsockopt",
    "__x64_sys_futex": "futex",
    "__x64_sys_madvise": "madvise",
}


def main():
    counts = collections.Counter()
    stack = []

    def charge():
        if not stack:
            return
        name = next((SYSCALLS[s] for s in stack if s in SYSCALLS), None)
        if name is None:
            if any(s.startswith("entry_SYSCALL") for s in stack):
                name = "other system calls"
            elif any(s.startswith("asm_") for s in stack):
                name = "interrupts and page faults"
            else:
                name = "user space"
        counts[name] += 1

    for line in sys.stdin:
        fields = line.split(None, 1)
        if not fields:
            charge()
            stack.clear()
        else:
            stack.append(fields[1].strip() if len(fields) > 1 else "?")
    charge()
    total = sum(counts.values()) or 1
    print("| system call | share of the server's samples |")
    print("| --- | ---: |")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")


if __name__ == "__main__":
    main()
