import sys

from ulmfit.cli.main import main

sys.exit(main())
