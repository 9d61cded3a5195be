"""``python -m senet`` (also what ``torchrun -m senet train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
