"""Process-wide settings, read once from the environment (``VK_FARGATE_*``).

Only paths live here for now; every later component adds its own section.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pydantic_settings


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


class Settings(pydantic_settings.BaseSettings):
    """Where vk-fargate keeps what outlives one process."""

    model_config = pydantic_settings.SettingsConfigDict(env_prefix="VK_FARGATE_")

    cache: Path = pydantic.Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "vk-fargate",
        description="Built binaries (per machine, keyed by version).",
    )
    state_dir: Path = pydantic.Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "vk-fargate",
        description="State of `vk-fargate dev up`: certificates, logs, etcd data.",
    )
    bin_dir: Path | None = pydantic.Field(
        default=None,
        description="Use the control-plane binaries in this folder instead of the cache.",
    )


def load() -> Settings:
    """Read the settings from the environment."""
    return Settings()
