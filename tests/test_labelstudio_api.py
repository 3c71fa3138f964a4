"""labelstudio.api: export files (the API itself is exercised by the fine-tune import tests)."""

from __future__ import annotations

import json

import pytest

from labelstudio.api import LabelStudioError, load_export

from ls_regions import task


def test_load_export_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LabelStudioError, match="not JSON"):
        load_export(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(LabelStudioError, match="list of tasks"):
        load_export(tmp_path / "obj.json")
    with pytest.raises(LabelStudioError, match="cannot read"):
        load_export(tmp_path / "missing.json")
    (tmp_path / "ok.json").write_text(json.dumps([task(1, "x.png")]))
    assert load_export(tmp_path / "ok.json")[0]["id"] == 1
