"""`python -m trm_cli ...` = `trm ...`."""

from . import main

raise SystemExit(main())
