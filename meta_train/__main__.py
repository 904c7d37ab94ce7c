"""``python -m meta_train CONFIG --out DIR [key=value ...]``; see :mod:`meta_train.cli`."""

import sys

from meta_train.cli import main

sys.exit(main())
