"""The ``RuntimeDefault`` seccomp filter, as an OCI ``linux.seccomp`` section. Pure.

What it refuses is what Docker's and containerd's default profiles refuse a
container without extra capabilities: loading kernel code (modules, kexec, bpf), the
kernel keyring, clocks, mounts and new namespaces, swap, reboot, reading other
processes' memory, NUMA policy, ``perf_event_open``, ``userfaultfd`` and io_uring.
Those defaults are allow-lists of some 350 calls; this is the same refusals written
as a deny-list (every other call allowed), so a call newer than the list is not
refused by accident, at the price of not refusing a dangerous call newer than it
either. A refused call fails with ``EPERM``, as theirs do. Unlike Docker's, ``clone``
is not filtered by its flags: ``unshare`` and ``setns`` are refused, and creating a
namespace through ``clone`` needs capabilities a default container lacks anyway.
"""

from __future__ import annotations

from typing import Any

REFUSED = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
)
EPERM = 1


def runtime_default() -> dict[str, Any]:
    """``linux.seccomp`` for runc: allow by default, refuse ``REFUSED`` with EPERM."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(REFUSED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        ],
    }
