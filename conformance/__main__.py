"""``python -m conformance``: the same as ``normref-conformance``."""

import sys

from conformance.cli import main

sys.exit(main())
