import sys

from sfprompt.cli import main

sys.exit(main())
