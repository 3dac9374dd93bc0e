import sys

from bonsai.allocator import tune_for_streaming
from bonsai.cli import main

tune_for_streaming()  # the CLI's process is ours to tune (see bonsai/allocator.py)
sys.exit(main())
