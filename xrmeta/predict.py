"""`python -m xrmeta.predict`: the same as `xrmeta-predict` (see `xrmeta.cli.predict`)."""
import sys

from .cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
