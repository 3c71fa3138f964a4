"""The on-disk cache of exported (and compressed or quantised) OpenVINO models: a second start loads in seconds.

Layout: ``$ADAPTIVECLICK_OPENVINO_CACHE`` (default ``$ADAPTIVECLICK_CACHE/openvino``) ``/<weights key>/<engine
key>/`` holding ``model.xml`` + ``model.bin`` (the IR), ``info.json`` (what made it, and how long that took) and
``compiled/<config key>/`` (the CPU plugin's ``CACHE_DIR`` for one compile config: its compiled blob).

* weights key: the checkpoint's sha256, or for untrained ``random:SIZE`` weights a hash of the state_dict;
* engine key: a hash of everything else the IR depends on (:func:`engine_key`): the engine code version, the
  openvino / nncf / torch versions, the MSDA custom op's build key (or grid_sample), input size, batch and the
  precision recipe.

A folder is written under a temporary name and renamed into place when complete, so a crash leaves no half IR and
two processes exporting at once each finish (one rename wins, the other's copy is dropped).

Trusted only as written: ``info.json`` records the sha256 of ``model.xml`` and ``model.bin`` at export, and a
cached IR is used only while both still match (:func:`cached_ir`; otherwise it is exported again). Each compiled
blob folder gets a ``SHA256SUMS.json`` of its files after the compile (:func:`record_blobs`), and before the next
compile a folder whose files do not match it exactly is emptied (:func:`checked_blobs`), so OpenVINO never imports
a blob nobody recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaptiveclick.storage.files import sha256_of
from adaptiveclick.storage.paths import cache_dir

log = logging.getLogger(__name__)

CACHE_ENV = "ADAPTIVECLICK_OPENVINO_CACHE"
#: bump when the exported graph or a recipe changes in a way the other key parts do not show
ENGINE_VERSION = 1
IR_FILE = "model.xml"
INFO_FILE = "info.json"
COMPILED_DIR = "compiled"
BLOB_SUMS = "SHA256SUMS.json"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "openvino")


def state_dict_key(net: torch.nn.Module) -> str:
    """sha256 of a network's state_dict (names, dtypes, shapes, bytes): the weights key of untrained weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def engine_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"engine": ENGINE_VERSION, **parts}, sort_keys=True).encode()).hexdigest()[:16]


def ir_folder(weights_key: str, key: str) -> Path:
    return cache_root() / weights_key[:32] / key


def cached_ir(folder: Path) -> Path | None:
    """The IR in ``folder`` if it is complete and its files still have the sha256 recorded at export."""
    xml = folder / IR_FILE
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and (folder / INFO_FILE).is_file()):
        return None
    try:
        recorded = read_info(folder).get("sha256")
    except (OSError, ValueError):
        return None
    if recorded != ir_digests(folder):
        log.warning(
            "a cached OpenVINO IR does not match the sha256 recorded at export: exported again",
            extra={"folder": str(folder)},
        )
        return None
    return xml


def ir_digests(folder: Path) -> dict[str, str]:
    """The sha256 of the IR's two files."""
    xml = folder / IR_FILE
    return {path.name: sha256_of(path) for path in (xml, xml.with_suffix(".bin"))}


def checked_blobs(folder: Path) -> Path:
    """``folder`` (a compiled-blob cache) as OpenVINO may use it: emptied unless its files are exactly those its
    ``SHA256SUMS.json`` lists, with those hashes."""
    manifest = folder / BLOB_SUMS
    files = {p.name: p for p in folder.iterdir() if p.is_file() and p.name != BLOB_SUMS} if folder.is_dir() else {}
    if not files:
        return folder
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        recorded = None
    if (
        not isinstance(recorded, dict)
        or set(recorded) != set(files)
        or any(sha256_of(path) != recorded[name] for name, path in files.items())
    ):
        log.warning("compiled OpenVINO blobs that were not recorded here: removed", extra={"folder": str(folder)})
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def record_blobs(folder: Path) -> None:
    """Write ``SHA256SUMS.json`` for the blobs OpenVINO left in ``folder`` after a compile."""
    if not folder.is_dir():
        return
    sums = {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != BLOB_SUMS}
    tmp = folder / f".{BLOB_SUMS}.{os.getpid()}"
    tmp.write_text(json.dumps(sums, indent=1, sort_keys=True))
    tmp.replace(folder / BLOB_SUMS)


def read_info(folder: Path) -> dict[str, Any]:
    return json.loads((folder / INFO_FILE).read_text())


def write_ir(folder: Path, save: Callable[[Path], dict[str, Any]]) -> Path:
    """Call ``save(tmp_folder)`` (it writes ``model.xml``/``.bin`` there and returns the facts for ``info.json``),
    then move the folder into place; returns the IR path."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        info = {**save(tmp), "sha256": ir_digests(tmp)}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))
        if folder.exists() and cached_ir(folder) is None:  # an incomplete leftover (files deleted by hand)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process got there first (a non-empty folder is not replaced): use its copy
            if cached_ir(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / IR_FILE
