"""README.md's table of every setting is generated from rag/settings.py; this
fails when someone added or changed a setting without regenerating it
(`.venv/bin/python scripts/config_table.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from rag.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_is_current() -> None:
    script = _script()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.updated(readme) == readme, "README.md's settings table is stale: run scripts/config_table.py"


def test_the_table_lists_every_setting_once() -> None:
    table = _script().render()
    for name in Settings.model_fields:
        assert table.count(f"| `RAG_{name.upper()}` |") == 1, name
