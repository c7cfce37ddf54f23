"""`python -m service`: same as `trm serve`."""

import sys

from .cli import main

sys.exit(main())
