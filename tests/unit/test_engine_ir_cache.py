"""model.engine.ir_cache: an IR is used only while its files match the sha256 recorded at export; compiled blobs
only while they match the sums recorded after the compile."""

from __future__ import annotations

from adaptiveclick.model.engine import ir_cache


def fake_export(tmp):
    (tmp / ir_cache.IR_FILE).write_text("<net/>")
    (tmp / "model.bin").write_bytes(b"weights")
    return {"made": "here"}


def test_a_cached_ir_is_used_only_while_it_matches_its_recorded_sha256(tmp_path):
    folder = tmp_path / "weights" / "engine"
    xml = ir_cache.write_ir(folder, fake_export)
    info = ir_cache.read_info(folder)
    assert info["made"] == "here" and set(info["sha256"]) == {"model.xml", "model.bin"}
    assert ir_cache.cached_ir(folder) == xml
    (folder / "model.bin").write_bytes(b"other weights")  # swapped after the export
    assert ir_cache.cached_ir(folder) is None
    assert ir_cache.write_ir(folder, fake_export) == xml and ir_cache.cached_ir(folder) == xml  # exported again
    info.pop("sha256")
    (folder / ir_cache.INFO_FILE).write_text(__import__("json").dumps(info))  # an old cache without sums
    assert ir_cache.cached_ir(folder) is None


def test_compiled_blobs_are_used_only_as_recorded(tmp_path):
    blobs = tmp_path / "compiled" / "key"
    assert ir_cache.checked_blobs(blobs) == blobs  # nothing yet
    blobs.mkdir(parents=True)
    (blobs / "123.blob").write_bytes(b"compiled")
    ir_cache.record_blobs(blobs)
    ir_cache.checked_blobs(blobs)
    assert (blobs / "123.blob").read_bytes() == b"compiled"  # as recorded: kept
    (blobs / "456.blob").write_bytes(b"planted")
    ir_cache.checked_blobs(blobs)
    assert not blobs.exists() or not any(blobs.iterdir())  # anything unrecorded: the folder is emptied
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / "789.blob").write_bytes(b"no sums at all")
    ir_cache.checked_blobs(blobs)
    assert not (blobs / "789.blob").exists()
