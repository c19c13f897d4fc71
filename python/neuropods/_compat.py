"""Names that moved into the standard library after the oldest supported
Python (3.10)."""

import sys

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions is a dependency on 3.10 only
    from typing_extensions import Unpack

__all__ = ["Unpack"]
