"""`python -m service`: same as `trm serve`."""

import sys

from service.cli import main

sys.exit(main())
