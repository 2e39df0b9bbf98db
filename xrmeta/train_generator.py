"""`python -m xrmeta.train_generator`: the same as `xrmeta-train-generator` (see `xrmeta.cli.train_generator`)."""
import sys

from .cli.train_generator import main

if __name__ == "__main__":
    sys.exit(main())
