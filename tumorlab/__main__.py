"""``python -m tumorlab`` is the ``tumorlab`` command."""

import sys

from tumorlab.cli import main

sys.exit(main())
