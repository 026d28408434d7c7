"""Entry point of `python -m cutter_backup` (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
