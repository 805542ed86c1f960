import sys

from goalhub_demo.demo import main

sys.exit(main())
