"""`python -m xrmeta.add_feedback`: the same as `xrmeta-add-feedback` (see `xrmeta.cli.add_feedback`)."""
import sys

from .cli.add_feedback import main

if __name__ == "__main__":
    sys.exit(main())
