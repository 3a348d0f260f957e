"""README.md's settings tables are the settings' own: regenerated, they come out the same.

A setting added, removed, given another default or described anew without running
``python hack/settings_table.py`` fails here, naming the command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pydantic
import pydantic_settings
import pytest

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "hack/settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_settings_tables_are_up_to_date() -> None:
    readme = (ROOT / "README.md").read_text()
    assert generator().render(readme) == readme, (
        "README.md's settings tables are stale: run python hack/settings_table.py"
    )


def test_every_setting_is_in_a_table_with_its_default_and_description() -> None:
    tables = generator()

    class Example(pydantic_settings.BaseSettings):
        model_config = pydantic_settings.SettingsConfigDict(env_prefix="EX_")
        port: int = pydantic.Field(default=80, description="Where | to listen.")
        ratio: float = pydantic.Field(default=2.0, description="A  ratio,\n  wrapped.")
        token: str | None = pydantic.Field(default=None, description="Unset: none.")
        on: bool = pydantic.Field(default=False, description="Off.")
        hidden: int = 3

    assert tables.table(Example, frozenset({"hidden"})).splitlines() == [
        "| variable | default | meaning |",
        "|---|---|---|",
        "| `EX_PORT` | `80` | Where \\| to listen. |",
        "| `EX_RATIO` | `2` | A ratio, wrapped. |",
        "| `EX_TOKEN` | unset | Unset: none. |",
        "| `EX_ON` | `false` | Off. |",
    ]
    with pytest.raises(ValueError, match=r"Example\.hidden has no description"):
        tables.table(Example)
