import sys

from graphscope.cli import main

sys.exit(main())
