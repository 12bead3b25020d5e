"""``python -m scdmac``: the same command line as ``scdmac`` (see :mod:`scdmac._cli`)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
