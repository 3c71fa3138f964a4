"""Where the service keeps what it downloads and builds: one variable, ``ADAPTIVECLICK_CACHE``.

Default ``~/.cache/adaptiveclick`` (the Docker image sets ``/var/cache/adaptiveclick``). Downloaded weights, registry
copies, compiled kernels and the Label Studio virtualenv of the end-to-end tests all live below it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ADAPTIVECLICK_CACHE"


def cache_dir() -> Path:
    """``$ADAPTIVECLICK_CACHE``, else ``~/.cache/adaptiveclick`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "adaptiveclick")
