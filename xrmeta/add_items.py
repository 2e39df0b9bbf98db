"""`python -m xrmeta.add_items`: the same as `xrmeta-add-items` (see `xrmeta.cli.add_items`)."""
import sys

from .cli.add_items import main

if __name__ == "__main__":
    sys.exit(main())
