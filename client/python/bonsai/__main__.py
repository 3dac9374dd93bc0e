import sys

from bonsai.cli import main

sys.exit(main())
