"""Dataset loaders for the IIS benchmarks in their published (RITM/SimpleClick) layouts, and where to find them.

Every loader is a sequence of :class:`Sample` (one per object instance): the RGB image, the instance mask and the
ignore mask (pixels that count neither as object nor as background, e.g. GrabCut's 128 "unknown" band).
"""

from .base import Annotation, DatasetError, InstanceDataset, PairedFolderDataset, Sample, read_gray, read_rgb
from .brats import BraTSDataset
from .davis import CocoMValDataset, DavisDataset
from .grabcut import BerkeleyDataset, GrabCutDataset
from .oai_zib import OAIZIBDataset
from .pascalvoc import PascalVocDataset
from .registry import (
    CONFIG_ENV,
    DATASETS,
    DATASETS_ENV,
    DatasetInfo,
    dataset_info,
    default_datasets_root,
    load_datasets_config,
    open_dataset,
    parse_dataset_names,
    resolve_dataset_root,
)
from .sbd import SBDDataset
from .sstem import SSTEMDataset

__all__ = [
    "Annotation",
    "BerkeleyDataset",
    "BraTSDataset",
    "CONFIG_ENV",
    "CocoMValDataset",
    "DATASETS",
    "DATASETS_ENV",
    "DatasetError",
    "DatasetInfo",
    "DavisDataset",
    "GrabCutDataset",
    "InstanceDataset",
    "OAIZIBDataset",
    "PairedFolderDataset",
    "PascalVocDataset",
    "SBDDataset",
    "SSTEMDataset",
    "Sample",
    "dataset_info",
    "default_datasets_root",
    "load_datasets_config",
    "open_dataset",
    "parse_dataset_names",
    "read_gray",
    "read_rgb",
    "resolve_dataset_root",
]
