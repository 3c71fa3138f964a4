"""labelstudio.api: export files (the API itself is exercised by the fine-tune import tests)."""

from __future__ import annotations

import json

import pytest

from adaptiveclick.labelstudio.api import LabelStudioError, load_export

from ls_fake import FakeLabelStudio
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


@pytest.fixture()
def fake_ls():
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.jpg"}, "annotations": []} for i in range(1, 251)]
    fake = FakeLabelStudio(tasks, "<View/>")
    yield fake
    fake.close()


def test_api_lists_pages_and_ids_and_creates_predictions(fake_ls):
    from adaptiveclick.labelstudio.api import LabelStudioAPI
    from adaptiveclick.labelstudio.ratelimit import RateLimit

    api = LabelStudioAPI(fake_ls.url, "legacy-key", rate=RateLimit(1000), backoff_s=0.01)
    assert [t["id"] for t in api.tasks(3)] == list(range(1, 251))
    assert [t["id"] for t in api.tasks(3, ids=[250, 7, 7, 120, 4000])] == [7, 120, 250]
    assert api.project(3)["label_config"] == "<View/>"
    fake_ls.fail_next = 2  # transient: retried
    assert api.task_predictions(7) == []
    created = api.create_prediction(7, [{"type": "brushlabels"}], 0.5, "v1")
    assert created["id"] == 1 and api.task_predictions(7)[0]["model_version"] == "v1"
    with pytest.raises(LabelStudioError, match="400.*does not exist") as refused:
        api.create_prediction(999, [], 0.0, "v1")
    assert not refused.value.transient
    fake_ls.fail_next = 10
    with pytest.raises(LabelStudioError, match="503") as busy:
        api.task_predictions(7)
    assert busy.value.transient
    fake_ls.fail_next = 0
    assert {auth for _, _, auth in fake_ls.requests} == {"Token legacy-key"}
    assert api.calls == len(fake_ls.requests)
    with pytest.raises(LabelStudioError, match="404"):
        api.project(4)
    with pytest.raises(LabelStudioError, match="URL and an API key"):
        LabelStudioAPI("", "")
