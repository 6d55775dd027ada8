import sys

from vmshield.cli import main

sys.exit(main())
