"""``python -m scoregen``: the command line (:func:`scoregen.cli.main`)."""

import sys

from scoregen.cli import main

if __name__ == "__main__":
    sys.exit(main())
