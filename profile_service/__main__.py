"""`python -m profile_service` is the `profile-service` command."""

import sys

from profile_service.runtime.cli import main

sys.exit(main())
