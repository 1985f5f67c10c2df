"""``python -m pyrovae.cli``: the ``pyrovae`` command line (:func:`pyrovae.cli.main`)."""

import sys

from pyrovae.cli import main

if __name__ == "__main__":
    sys.exit(main())
