"""`python -m xrmeta.train`: the same as `xrmeta-train` (see `xrmeta.cli.train`)."""
import sys

from .cli.train import main

if __name__ == "__main__":
    sys.exit(main())
