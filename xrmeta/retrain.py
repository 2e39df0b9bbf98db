"""`python -m xrmeta.retrain`: the same as `xrmeta-retrain` (see `xrmeta.cli.retrain`)."""
import sys

from .cli.retrain import main

if __name__ == "__main__":
    sys.exit(main())
