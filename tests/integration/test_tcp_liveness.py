"""Pooled connections carry TCP keepalive and user-timeout settings, unless the URL sets its own.

The behaviour they buy (a vanished database host breaks the connection in about 20 s instead of
many minutes) is the kernel's; what we own, and check here, is that every connection asks for it.
"""

import asyncio

from psycopg.conninfo import make_conninfo

from profile_service.storage import db
from tests.conftest import ThrowawayDatabase


def _live_settings(conninfo: str) -> dict[str, str]:
    async def settings() -> dict[str, str]:
        pool = db.create_pool(conninfo, size=1, prepare=False, statements=(), timeout_ms=1000)
        await pool.open(wait=True, timeout=10)
        try:
            async with pool.connection(timeout=10) as conn:
                return {
                    option.keyword.decode(): (option.val or b"").decode()
                    for option in conn.pgconn.info
                }
        finally:
            await pool.close()

    return asyncio.run(settings())


def test_pooled_connections_ask_for_tcp_liveness(test_db: ThrowawayDatabase) -> None:
    settings = _live_settings(test_db.service_url)
    for keyword, value in db.TCP_LIVENESS.items():
        assert settings[keyword] == value, keyword


def test_a_setting_in_the_url_wins(test_db: ThrowawayDatabase) -> None:
    settings = _live_settings(make_conninfo(test_db.service_url, keepalives_idle="30"))
    assert settings["keepalives_idle"] == "30"
    assert settings["tcp_user_timeout"] == db.TCP_LIVENESS["tcp_user_timeout"]
