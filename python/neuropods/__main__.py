"""`python -m neuropods`: the `neuropods` command."""

import sys

from neuropods.cli import main

sys.exit(main())
