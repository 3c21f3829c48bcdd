"""``python -m talora.cli ...``, the same as ``python -m talora ...``."""

import sys

from . import main

sys.exit(main())
