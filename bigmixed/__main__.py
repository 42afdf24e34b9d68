"""``python -m bigmixed``: the command line (see bigmixed.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
