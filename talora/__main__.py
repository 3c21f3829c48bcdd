"""``python -m talora ...``: the command line, as launchers such as ``torchrun -m talora`` start it."""

import sys

from .cli import main

sys.exit(main())
