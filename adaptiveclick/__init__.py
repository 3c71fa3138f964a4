"""AdaptiveClick Backend: interactive segmentation for Label Studio and CVAT, as one import package.

The parts live in the repository's top-level folders and install under this package (each folder is linked here,
so a checkout imports exactly what a wheel installs):

* :mod:`adaptiveclick.model`: the network, checkpoints, predictors and click logic;
* :mod:`adaptiveclick.ops`: multi-scale deformable attention (compiled kernels, OpenVINO custom op);
* :mod:`adaptiveclick.evaluation`: the simulated annotator and the NoC loop;
* :mod:`adaptiveclick.backend`: the Label Studio ML backend and the CVAT adapters;
* :mod:`adaptiveclick.finetune` / :mod:`adaptiveclick.annotate`: training and whole-project jobs;
* :mod:`adaptiveclick.labelstudio` / :mod:`adaptiveclick.storage`: Label Studio I/O and the model registry (no
  torch);
* :mod:`adaptiveclick.benchmarks`: the scripts behind ``adaptiveclick benchmark``.

Importing this package imports none of them (``adaptiveclick --help`` stays fast).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptiveclick-backend")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0+unknown"
