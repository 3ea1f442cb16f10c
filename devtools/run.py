"""`make run`: a development database (found or embedded), migrated, and the server on :50051.

Serves with a development JWT secret and prints ready-to-paste grpcurl commands.
"""

import os
import shlex
import sys

from devtools import database as devdb
from profile_service.auth import tokens
from profile_service.runtime import cli, logs
from profile_service.runtime.config import Settings
from profile_service.storage import migrate

DEV_DATABASE = "profile_dev"
DEV_JWT_SECRET = "dev-only-secret-never-use-in-production"  # noqa: S105 - printed in the README
DEMO_USER = "11111111-1111-4111-8111-111111111111"


def prepare_database() -> str:
    """Create and migrate the development database; return the service's login URL."""
    server_url = devdb.admin_url()
    devdb.ensure_database(server_url, DEV_DATABASE)
    admin_url = devdb.with_database(server_url, DEV_DATABASE)
    migrate.upgrade(admin_url)
    return devdb.ensure_service_login(admin_url)


def grpcurl_commands(port: int, grpcurl: str, secret: str) -> str:
    """Commands to paste into another terminal, with fresh tokens (valid for a day)."""
    user = tokens.mint(secret, role="authenticated", sub=DEMO_USER, ttl_seconds=86400)
    svc = tokens.mint(secret, role="service_role", ttl_seconds=86400)
    target = f"localhost:{port}"
    auth = '-H "authorization: Bearer $USER_TOKEN"'
    upsert = '{"profile": {"age": 34, "heightCm": 170, "availableEquipment": ["barbell"]}}'
    masked = '{"updateMask": {"paths": ["age"]}, "profile": {"age": 35}}'
    # The same Get from Python, through the client a plain `pip install` gives.
    client = (
        "import os; from profile_service.client import ProfileClient; "
        f'print(ProfileClient("{target}", token=os.environ["USER_TOKEN"]).get())'
    )
    python = shlex.quote(sys.executable)
    return f"""
The Profile Service is up on {target}. In another terminal, from this directory:

  export USER_TOKEN={user}
  export SERVICE_TOKEN={svc}

  {grpcurl} -plaintext {target} list
  {grpcurl} -plaintext {target} describe profile.v1.ProfileService
  {grpcurl} -plaintext {auth} -d {shlex.quote(upsert)} {target} profile.v1.ProfileService/Upsert
  {grpcurl} -plaintext {auth} -d {shlex.quote(masked)} {target} profile.v1.ProfileService/Upsert
  {grpcurl} -plaintext {auth} {target} profile.v1.ProfileService/Get
  {python} -c {shlex.quote(client)}
  {grpcurl} -plaintext -H "authorization: Bearer $SERVICE_TOKEN" \\
      -d '{{"ownerId": "{DEMO_USER}"}}' {target} profile.v1.ProfileService/Get
  {grpcurl} -plaintext {auth} {target} profile.v1.ProfileService/SoftDelete
  {grpcurl} -plaintext {auth} {target} profile.v1.ProfileService/Undelete
  {grpcurl} -plaintext -H "authorization: Bearer $SERVICE_TOKEN" \
      -d '{{"ownerIds": ["{DEMO_USER}"]}}' {target} profile.v1.ProfileService/BatchGetProfiles
  {grpcurl} -plaintext -emit-defaults -H "authorization: Bearer $SERVICE_TOKEN" \\
      -d '{{"dryRun": true}}' {target} profile.v1.ProfileService/Purge
  {grpcurl} -plaintext {target} grpc.health.v1.Health/Check

More tokens: JWT_SECRET={secret} .venv/bin/profile-service token --sub <uuid>
Stop with Ctrl-C (the server drains in-flight calls first).
"""


def main() -> int:
    """Prepare the database, print the grpcurl commands, serve until Ctrl-C or SIGTERM."""
    logs.configure()  # until the settings are read: preparing the database logs too
    env = {
        "GRPC_PORT": "50051",
        **os.environ,
        "DATABASE_URL": prepare_database(),
        "JWT_SECRET": os.environ.get("JWT_SECRET", DEV_JWT_SECRET),
    }
    settings = Settings.from_env(env)
    logs.configure(settings.log_level)
    grpcurl = os.path.relpath(os.path.join(os.path.dirname(sys.executable), "grpcurl"))
    print(grpcurl_commands(settings.grpc_port, grpcurl, env["JWT_SECRET"]), flush=True)
    return cli.serve(settings)


if __name__ == "__main__":
    sys.exit(main())
