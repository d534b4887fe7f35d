"""`python -m models list` / `python -m models resolve [name] [--version V]`."""
import sys

from models.registry import main

sys.exit(main())
