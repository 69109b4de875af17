import sys

from skyfeast.scheduler.cli.main import main

sys.exit(main())
