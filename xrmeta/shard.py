"""`python -m xrmeta.shard`: the same as `xrmeta-shard` (see `xrmeta.cli.shard`)."""
import sys

from .cli.shard import main

if __name__ == "__main__":
    sys.exit(main())
