"""``python -m meta_train CONFIG --out DIR [key=value ...]``; see :mod:`meta_train.run.cli`."""

import sys

from meta_train.run.cli import main

sys.exit(main())
