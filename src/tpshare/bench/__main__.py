"""``python -m tpshare.bench``: run the comparison experiments."""

import sys

from .cli import main

sys.exit(main())
