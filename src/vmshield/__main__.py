from vmshield.cli import main
import sys
sys.exit(main())
