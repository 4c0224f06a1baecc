"""`python -m medsegsuite` = the `medsegsuite` command."""
import sys

from .cli import main

sys.exit(main())
