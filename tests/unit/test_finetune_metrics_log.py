"""finetune.metrics_log: the JSON-lines log, its truncation on resume, the plot and the status file."""

from __future__ import annotations

import json

from adaptiveclick.finetune.metrics_log import MetricsLog, read_status, write_status


def test_append_read_truncate_and_plot(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 5):
        log.append("train", step, loss=10.0 / step, lr=5e-5)
    log.append("val", 2, noc85=4.5, noc90=6.0)
    log.append("val", 4, noc85=3.5, noc90=5.0)
    with open(log.path, "a") as f:
        f.write('{"kind": "train", "step": 5, "lo')  # cut short by a crash
    entries = log.read()
    assert [e["step"] for e in entries] == [1, 2, 3, 4, 2, 4] and entries[0]["loss"] == 10.0
    assert all("time" in e for e in entries)
    log.truncate_after(2)
    assert [(e["kind"], e["step"]) for e in log.read()] == [("train", 1), ("train", 2), ("val", 2)]
    png = log.plot()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_of_an_empty_log(tmp_path):
    assert MetricsLog(tmp_path).plot().is_file()


def test_status_file(tmp_path):
    assert read_status(tmp_path) is None
    write_status(tmp_path, "running", step=3, steps=10)
    status = read_status(tmp_path)
    assert status["state"] == "running" and status["step"] == 3 and status["pid"] > 0
    write_status(tmp_path, "failed", error="boom")
    assert read_status(tmp_path)["state"] == "failed"
    assert json.loads((tmp_path / "status.json").read_text())["error"] == "boom"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
