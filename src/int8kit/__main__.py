"""``python -m int8kit`` runs the command line."""

import sys

from int8kit.cli import main

sys.exit(main())
