"""``python -m scgan``."""
import sys

from scgan.cli import main

sys.exit(main())
