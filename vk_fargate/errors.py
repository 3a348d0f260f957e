"""The error tree of vk-fargate, so callers catch by behaviour, not by origin.

Foreign exceptions are mapped at the boundary with ``raise Ours(...) from exc``::

    VkFargateError                 anything vk-fargate raises on purpose
    +-- ConfigError                a setting or input file is wrong
    +-- HarnessError               the local control plane could not be started
    |   +-- BinariesError          the control-plane binaries are missing or failed to build
    +-- KubeError                  the Kubernetes API answered an error; ``status``, ``reason``
    |   +-- KubeUnavailable        the API server could not be reached (503 ServiceUnavailable)
    +-- AwsError                   an AWS call failed or AWS holds something unusable; ``code``
    |   +-- SubnetNotFound         a profile's subnet does not exist
    |   +-- SubnetNotPrivate       a profile's subnet routes to an internet gateway
    |   +-- RoleNotUsable          the pod execution role is missing or does not trust Fargate
    |   +-- LoggingConfigInvalid   the aws-logging ConfigMap breaks a rule; ``problems`` lists all
    +-- FleetError                 a fleet API call failed; ``status`` and ``code`` as on the wire
        +-- BadRequest             400: malformed request (not JSON, bad query parameter)
        +-- Unauthorized           401: missing or wrong bearer token
        +-- NotFound               404: no such microVM, host or container
        +-- Conflict               409: the id exists with another spec
        +-- CursorExpired          410: the event cursor was pruned; list again
        +-- InvalidSpec            422: the spec breaks a rule; ``field`` names it
        +-- TooManySessions        429: the microVM has as many exec/port sessions as allowed
        +-- InsufficientCapacity   503: nothing fits now; retry after ``retry_after`` seconds
        +-- FleetUnavailable       the fleet could not be reached or answered 5xx
"""

from __future__ import annotations

from collections.abc import Sequence
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


class ImageBuildError(HarnessError):
    """The local images could not be built or pushed (umoci, skopeo, a package file)."""

    def __init__(self, message: str) -> None:
        super().__init__("build the local images", message)


class KubeError(VkFargateError):
    """The Kubernetes API answered with an error status (``status``, ``reason``)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class KubeUnavailable(KubeError):
    """The API server could not be reached or broke the connection (a restart, an
    upgrade, a failover): retry with back-off, as for its own 503."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "ServiceUnavailable", message)


class AwsError(VkFargateError):
    """An AWS call failed or AWS holds something unusable; ``code`` is AWS's error code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SubnetNotFound(AwsError):
    """A profile names a subnet that does not exist (in this region and account)."""

    def __init__(self, subnet_id: str) -> None:
        super().__init__(f"subnet {subnet_id} does not exist", code="InvalidSubnetID.NotFound")
        self.subnet_id = subnet_id


class SubnetNotPrivate(AwsError):
    """A profile names a public subnet: its route table routes to an internet gateway."""

    def __init__(self, subnet_id: str, *, route_table_id: str, gateway_id: str) -> None:
        super().__init__(
            f"subnet {subnet_id} is public: route table {route_table_id} has a route to "
            f"internet gateway {gateway_id}; Fargate profiles take private subnets only"
        )
        self.subnet_id = subnet_id
        self.route_table_id = route_table_id
        self.gateway_id = gateway_id


class RoleNotUsable(AwsError):
    """The pod execution role is missing or does not trust ``eks-fargate-pods``."""

    def __init__(self, role_arn: str, reason: str, *, code: str | None = None) -> None:
        super().__init__(f"pod execution role {role_arn}: {reason}", code=code)
        self.role_arn = role_arn
        self.reason = reason


class LoggingConfigInvalid(AwsError):
    """The ``aws-observability/aws-logging`` ConfigMap breaks a rule; ``problems`` lists all."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("aws-logging ConfigMap is invalid: " + "; ".join(self.problems))


class FleetError(VkFargateError):
    """A fleet API call failed. ``status`` is the HTTP status, ``code`` the error code."""

    status = 500
    code = "Internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadRequest(FleetError):
    """The request is malformed: not JSON, or a bad query parameter."""

    status, code = 400, "BadRequest"


class Unauthorized(FleetError):
    """The bearer token is missing or wrong."""

    status, code = 401, "Unauthorized"


class NotFound(FleetError):
    """No such microVM, host or container."""

    status, code = 404, "NotFound"


class Conflict(FleetError):
    """The microVM id exists with a different spec."""

    status, code = 409, "Conflict"


class CursorExpired(FleetError):
    """The event cursor is older than what the fleet keeps; list again."""

    status, code = 410, "CursorExpired"


class InvalidSpec(FleetError):
    """The spec breaks a rule; ``field`` names the offending field."""

    status, code = 422, "InvalidSpec"


class TooManySessions(FleetError):
    """As many exec and port sessions are open as allowed (the fleet's per microVM, the
    kubelet API's per pod or per replica); try again when one ends."""

    status, code = 429, "TooManySessions"


class InsufficientCapacity(FleetError):
    """No active host has room now; retry after ``retry_after`` seconds."""

    status, code = 503, "InsufficientCapacity"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FleetUnavailable(FleetError):
    """The fleet could not be reached, or failed with a 5xx."""

    status, code = 503, "Unavailable"

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


FLEET_ERRORS: dict[str, type[FleetError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        Conflict,
        CursorExpired,
        InvalidSpec,
        TooManySessions,
        InsufficientCapacity,
    )
}
