"""Entry point for ``python -m zeal_core``."""

import sys

from zeal_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
