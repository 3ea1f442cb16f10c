"""Who a call acts for: the database role it assumes and the claims row-level security reads.
Auth makes one from a verified token; the use cases and the storage take it as it is."""

from dataclasses import dataclass
from typing import Literal

DbRole = Literal["authenticated", "service_role"]
# The roles a token may name; anything else is refused before the database.
ALLOWED_ROLES: tuple[DbRole, ...] = ("authenticated", "service_role")


@dataclass(frozen=True)
class Caller:
    """A verified caller: the database role to assume, the user id if any, the claims as JSON."""

    role: DbRole
    sub: str | None
    claims_json: str
    expires_at: float

    @property
    def is_user(self) -> bool:
        """True for a signed-in user (role `authenticated`)."""
        return self.role == "authenticated"
