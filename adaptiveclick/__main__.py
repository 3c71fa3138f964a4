"""``python -m adaptiveclick ...`` is the ``adaptiveclick`` command."""

import sys

from .cli import main

sys.exit(main())
