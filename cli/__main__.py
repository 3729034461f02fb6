"""``python -m cli ...`` is ``coffer ...`` (the dev cluster starts its children this way)."""

import sys

from cli.main import main

sys.exit(main())
