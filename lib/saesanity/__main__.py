"""`python -m saesanity report …` — the same as the `saesanity` console script (`cli.main`)."""

import sys

from .cli import main

sys.exit(main())
