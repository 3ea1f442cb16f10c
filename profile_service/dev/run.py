"""`make run`: a development database (found or embedded), migrated, ready for the server."""

import logging

from profile_service import migrate
from profile_service.dev import database as devdb

_LOGGER = logging.getLogger(__name__)
DEV_DATABASE = "profile_dev"


def prepare_database() -> str:
    """Create and migrate the development database; return the service's login URL."""
    server_url = devdb.admin_url()
    devdb.ensure_database(server_url, DEV_DATABASE)
    admin_url = devdb.with_database(server_url, DEV_DATABASE)
    migrate.upgrade(admin_url)
    return devdb.ensure_service_login(admin_url)


def main() -> None:
    """Prepare the database and say where it is."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    service_url = prepare_database()
    _LOGGER.info(
        "database %s migrated; the service logs in as %s", DEV_DATABASE, devdb.SERVICE_LOGIN_ROLE
    )
    print(f"DATABASE_URL={service_url}")


if __name__ == "__main__":
    main()
