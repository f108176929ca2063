"""``python -m tumorlab`` is the ``tumorlab`` command."""

import sys

from tumorlab.cli.main import main

sys.exit(main())
