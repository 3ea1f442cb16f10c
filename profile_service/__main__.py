"""`python -m profile_service` is the `profile-service` command."""

import sys

from profile_service.cli import main

sys.exit(main())
