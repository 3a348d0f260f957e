"""The error tree of vk-fargate, so callers catch by behaviour, not by origin.

Foreign exceptions are mapped at the boundary with ``raise Ours(...) from exc``::

    VkFargateError                 anything vk-fargate raises on purpose
    +-- ConfigError                a setting or input file is wrong
    +-- HarnessError               the local control plane could not be started
        +-- BinariesError          the control-plane binaries are missing or failed to build
"""

from __future__ import annotations

from pathlib import Path


class VkFargateError(Exception):
    """Base class of every error vk-fargate raises on purpose."""


class ConfigError(VkFargateError):
    """A setting or input file is wrong; the message names it."""


class HarnessError(VkFargateError):
    """A step of starting the local control plane failed.

    ``step`` names what was being done and ``log`` the file that says why.
    """

    def __init__(self, step: str, message: str, *, log: Path | None = None) -> None:
        self.step = step
        self.log = log
        where = f" (log: {log})" if log is not None else ""
        super().__init__(f"{step}: {message}{where}")


class BinariesError(HarnessError):
    """The control-plane binaries are missing and could not be built."""
