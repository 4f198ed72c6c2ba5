"""``python -m scoregen``: the command line (:func:`scoregen.cli.main`)."""

import sys

from scoregen.cli import main

sys.exit(main())
