"""`python -m lucent_dsl ...`: the same as the `lucent-dsl` command."""
import sys

from .cli.app import main

sys.exit(main())
