import sys

from statelog._cli import main

sys.exit(main())
