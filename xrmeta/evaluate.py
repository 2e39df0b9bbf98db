"""`python -m xrmeta.evaluate`: the same as `xrmeta-evaluate` (see `xrmeta.cli.evaluate`)."""
import sys

from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
