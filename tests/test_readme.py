"""README's commands and assets are the ones that exist (a new user copies them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convsync_pipeline.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def code_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def convsync_commands() -> list[list[str]]:
    commands = []
    for line in code_lines():
        words = line.split()
        if "convsync" in [Path(w).name for w in words[:1]]:
            commands.append(words[1:])
    return commands


def test_every_convsync_command_in_readme_exists_with_its_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    commands = convsync_commands()
    assert len(commands) >= 8
    for words in commands:
        if words[0] == "--version":
            continue
        with pytest.raises(SystemExit):
            parser.parse_args([words[0], "--help"])
        help_text = capsys.readouterr().out
        for option in re.findall(r"--[a-z-]+", " ".join(words[1:])):
            assert option in help_text, f"README: convsync {words[0]} {option}"


def test_readme_names_the_five_assets_in_their_groups(tmp_path, monkeypatch) -> None:
    from convsync_pipeline.definitions import build_definitions
    from convsync_pipeline.settings import load_settings

    defs = build_definitions(load_settings({"CONVSYNC_STORE": str(tmp_path)}))
    groups = {
        key.to_user_string(): node.group_name
        for key, node in ((n.key, n) for n in defs.resolve_asset_graph().asset_nodes)
    }
    assert groups == {
        "raw_conversations": "convsync",
        "normalized_conversations": "convsync",
        "ai_analysis": "convsync",
        "daily_summary": "convsync",
        "dead_letters": "convsync_operations",
    }
    assert "shows five assets" in README
    for name, group in groups.items():
        assert f"`{name}`" in README
        assert f"group `{group}`" in README


def test_readme_store_layout_names_the_internal_folder_the_folder_store_uses() -> None:
    from convsync_pipeline.store import local

    assert f"`{local._INTERNAL_DIR}/cas/*.lock`" in README
    assert f"`{local._INTERNAL_DIR}/digests/**`" in README
    assert "state/cas" not in README
