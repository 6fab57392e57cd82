"""`python -m graphscope ...` runs the command line."""

import sys

from graphscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
