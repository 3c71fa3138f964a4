"""Dataset names and where each dataset lives on disk.

A dataset's root is found, in this order:

1. a *datasets config file* (``--datasets-config FILE`` or ``$ADAPTIVECLICK_DATASETS_CONFIG``): a YAML/JSON mapping
   from dataset name to folder, e.g. ``{GrabCut: /data/GrabCut, SBD: ../SBD/dataset}`` (relative paths are relative
   to the file). The reference's ``configs/base_configuration.yaml`` keys (``GRABCUT_PATH``, ``BraTS_PATH``, ...)
   are understood too, and its other settings (``*_PATH`` or upper-case keys) are ignored;
2. ``$ADAPTIVECLICK_<NAME>_PATH`` (``ADAPTIVECLICK_GRABCUT_PATH``, ``ADAPTIVECLICK_OAIZIB_PATH``, ...);
3. the dataset's usual folder name under the *data root* (``--data-root DIR``, else ``$ADAPTIVECLICK_DATASETS``,
   else ``../shared/datasets`` next to the repository): ``GrabCut/``, ``Berkeley/``, ``DAVIS/``, ``PascalVOC/`` or
   ``VOC2012/``, ``SBD/``, ``ssTEM/stack1/``, ``BraTS/`` or ``BraTS20/``, ``OAI-ZIB/``, ``COCO_MVal/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .base import DatasetError, InstanceDataset
from .brats import BraTSDataset
from .davis import CocoMValDataset, DavisDataset
from .grabcut import BerkeleyDataset, GrabCutDataset
from .oai_zib import OAIZIBDataset
from .pascalvoc import PascalVocDataset
from .sbd import SBDDataset
from .sstem import SSTEMDataset

DATASETS_ENV = "ADAPTIVECLICK_DATASETS"
CONFIG_ENV = "ADAPTIVECLICK_DATASETS_CONFIG"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DatasetInfo:
    """A benchmark: its loader, the folder names it usually has, and its zoom-in target size in the reference's
    "cvpr" evaluation mode (672 for DAVIS, 448 elsewhere)."""

    name: str
    loader: Callable[[Path], InstanceDataset]
    folders: tuple[str, ...]
    zoom_in_size: int = 448
    aliases: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        return f"ADAPTIVECLICK_{re.sub('[^A-Z0-9]+', '_', self.name.upper())}_PATH"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("GrabCut", GrabCutDataset, ("GrabCut",)),
        DatasetInfo("Berkeley", BerkeleyDataset, ("Berkeley",)),
        DatasetInfo("DAVIS", DavisDataset, ("DAVIS",), zoom_in_size=672),
        # more specific folders first: the first one that exists wins
        DatasetInfo(
            "PascalVOC",
            PascalVocDataset,
            ("PascalVOC/VOCdevkit/VOC2012", "PascalVOC", "VOCdevkit/VOC2012", "VOC2012"),
            aliases=("VOC",),
        ),
        DatasetInfo("SBD", SBDDataset, ("SBD/benchmark_RELEASE/dataset", "SBD/dataset", "SBD")),
        DatasetInfo("ssTEM", SSTEMDataset, ("ssTEM/stack1", "ssTEM")),
        DatasetInfo("BraTS", BraTSDataset, ("BraTS", "BraTS20")),
        DatasetInfo("OAIZIB", OAIZIBDataset, ("OAI-ZIB", "OAIZIB")),
        DatasetInfo("COCO_MVal", CocoMValDataset, ("COCO_MVal",)),
    )
}


def _key(name: str) -> str:
    return re.sub("[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(alias): info for info in DATASETS.values() for alias in (info.name, *info.aliases)}


def dataset_info(name: str) -> DatasetInfo:
    """The benchmark called ``name`` (case, ``-`` and ``_`` do not matter: ``oai-zib`` is ``OAIZIB``)."""
    info = _BY_KEY.get(_key(name))
    if info is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return info


def parse_dataset_names(text: str) -> list[DatasetInfo]:
    """``"GrabCut,Berkeley"`` -> their infos, in order, without duplicates."""
    infos: list[DatasetInfo] = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        info = dataset_info(name)
        if info not in infos:
            infos.append(info)
    if not infos:
        raise DatasetError(f"no dataset named; known: {', '.join(DATASETS)}")
    return infos


def default_datasets_root() -> Path:
    """``$ADAPTIVECLICK_DATASETS``, else ``../shared/datasets`` next to the repository."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def load_datasets_config(path: str | Path) -> dict[str, Path]:
    """``{dataset name: root}`` from a YAML/JSON file (see the module docstring)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DatasetError(f"cannot read datasets config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise DatasetError(f"datasets config {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"datasets config {path} must map dataset names to folders")
    roots: dict[str, Path] = {}
    for key, value in content.items():
        key = str(key)
        reference_style = key.upper().endswith("_PATH")
        info = _BY_KEY.get(_key(key[:-5] if reference_style else key))
        if info is None:
            if reference_style or key.isupper():
                continue  # the reference config's other settings (model, experiment and training folders)
            raise DatasetError(f"datasets config {path}: unknown dataset {key!r}; known: {', '.join(DATASETS)}")
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"datasets config {path}: {key} must be a folder path, got {value!r}")
        folder = Path(os.path.expanduser(value.strip()))
        roots[info.name] = folder if folder.is_absolute() else path.parent / folder
    return roots


def resolve_dataset_root(
    info: DatasetInfo,
    data_root: str | Path | None = None,
    config: Mapping[str, Path] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Where ``info``'s dataset lives (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    if config and info.name in config:
        return Path(config[info.name])
    if environ.get(info.env_var):
        return Path(environ[info.env_var])
    root = Path(data_root) if data_root is not None else default_datasets_root()
    for folder in info.folders:
        if (root / folder).is_dir():
            return root / folder
    raise DatasetError(
        f"{info.name}: no {info.folders[0]}/ folder under {root}; pass --data-root DIR (the folder "
        f"holding it), set {info.env_var}, or name it in a datasets config file"
    )


def open_dataset(
    name: str, data_root: str | Path | None = None, config: Mapping[str, Path] | None = None
) -> InstanceDataset:
    """The loader of dataset ``name`` on its root (its layout is checked now)."""
    info = dataset_info(name)
    return info.loader(resolve_dataset_root(info, data_root, config))
