import sys

from pipnet.cli import main

sys.exit(main())
