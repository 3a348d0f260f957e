"""What a shim runs a microVM with: ``process`` (a sandboxed process tree, everywhere)
or ``microvm`` (a QEMU microvm guest). Both report through ``sandbox.Status`` and write
CRI logs, so the daemon cannot tell them apart except by the host's ``runtime``.
"""
