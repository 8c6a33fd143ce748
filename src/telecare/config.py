"""Settings: the only reader of the environment (TELECARE_* variables and an optional .env file)."""

from __future__ import annotations

import base64
import enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Mode(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


# Development-only fallbacks. Production refuses to start without real values (see _require_secrets).
_DEV_SECRET = "telecare-development-secret-not-for-production-use-000000"  # noqa: S105 - development only; refused in production
_DEV_DATA_KEY = base64.urlsafe_b64encode(b"telecare-dev-data-key-32-bytes!!").decode()


class BlobBackend(enum.StrEnum):
    """Where stored files' encrypted bytes live (docs/files.md#back-ends)."""

    FILESYSTEM = "filesystem"
    S3 = "s3"


class Settings(BaseSettings):
    """Every setting Telecare reads. Each is an environment variable with the TELECARE_ prefix."""

    model_config = SettingsConfigDict(env_prefix="TELECARE_", env_file=".env", extra="ignore")

    mode: Mode = Mode.DEVELOPMENT
    database_url: str = "sqlite:///var/telecare.db"
    data_dir: Path = Path("var")
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000

    session_secret: SecretStr | None = None
    audit_hmac_key: SecretStr | None = None
    data_key: SecretStr | None = Field(
        default=None, description="base64url of 32 random bytes: AES-256-GCM key for secrets and blobs"
    )

    staff_idle_minutes: int = 15  # NIST SP 800-63B AAL3 inactivity bound (docs/security.md#sessions)
    patient_idle_minutes: int = 30  # NIST SP 800-63B AAL2 inactivity bound
    session_absolute_hours: int = 12  # NIST SP 800-63B re-authentication at least every 12 h
    break_glass_minutes: int = 60  # docs/security.md#goal-6: access expires <= 60 min
    # Open WebSockets re-check their credential and patients at least this often (revocation events make
    # them re-check at once; this bounds what a revocation from a process without the event bus leaves open).
    socket_recheck_seconds: float = Field(default=30, gt=0, le=300)

    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    login_rate_per_ip_per_minute: int = 30
    totp_rate_per_user_per_minute: int = 5

    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 20 * 1024 * 1024  # docs/security.md#goal-15: uploads <= 20 MB

    # Stored files (files/, docs/files.md): encrypted in the process, then kept on the filesystem under
    # data_dir/blobs or in an S3-compatible bucket (TELECARE_BLOB_BACKEND=s3 and the TELECARE_S3_* values).
    blob_backend: BlobBackend = BlobBackend.FILESYSTEM
    s3_endpoint_url: str | None = None  # None: AWS's own endpoint for the region
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None  # None with the secret: boto3's default credential chain
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = "blobs/"
    # docs/files.md#limits: an iPhone's 48 MP HEIC is 48.8 million pixels; 2,048 px is enough for a
    # dermatology photo on screen and keeps every stored image below about 1.5 MB.
    image_max_pixels: int = Field(default=50_000_000, gt=0)
    image_max_edge: int = Field(default=2048, ge=64)
    # docs/triage.md#protocol-format: a directory of the organization's own (licensed) triage protocols.
    triage_protocol_dir: Path | None = None

    # OWASP minimum for argon2id: m >= 19 MiB, t >= 2, p = 1 (docs/security.md#goal-16)
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19_456
    argon2_parallelism: int = 1

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "telecare@localhost"

    # WebRTC (visits): ICE servers handed to browsers. Comma-separated or a JSON list, e.g.
    # TELECARE_STUN_URLS=stun:stun.example.org:3478
    # TELECARE_TURN_URLS=turn:turn.example.org:3478,turns:turn.example.org:5349?transport=tcp
    # TURN credentials use the TURN REST shared-secret scheme (coturn `use-auth-secret`): username
    # "<expiry unix time>:<user tag>", credential base64(HMAC-SHA1(secret, username)).
    stun_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_secret: SecretStr | None = None
    turn_ttl_seconds: int = Field(default=3600, ge=60, le=86_400)
    # Remote patient monitoring (monitoring/)
    rpm_max_batch: int = 10_000  # readings per native batch request (issue 4)
    rpm_max_body_bytes: int = 8 * 1024 * 1024  # a 10,000-reading batch is about 2 MB of JSON
    rpm_device_requests_per_minute: int = 1200  # per device key and worker (token bucket)
    rpm_background_interval_seconds: float = 30.0  # escalation / missing-data sweep; 0 disables the loop
    visits_background_interval_seconds: float = 60.0  # reminders / no-show marking; 0 disables the loop
    rpm_missing_data_days: int = 3  # default of the missing-data rule (per-patient override possible)

    # Audit sealing (audit/sealer.py, docs/audit.md): `telecare audit verify` fails on an entry left unsealed
    # longer than the window; the server's sealer runs every interval seconds besides after each commit.
    audit_seal_window_seconds: float = Field(default=5.0, gt=0)
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0)

    cookie_secure: bool = False
    # Host names the server answers to (Host header); others get 400 before routing, so no redirect or link
    # is ever built from a forged Host. Empty: the base_url's host, localhost and 127.0.0.1 (and the test
    # client's "testserver" in test mode). Comma-separated in TELECARE_ALLOWED_HOSTS; "*" allows any.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Interactive API documentation at /docs (Swagger UI, served from this server). Default: on, except in
    # production, where the API description stays at /openapi.json only.
    api_docs: bool | None = None
    # Failed TOTP codes in a row before the account is locked (like passwords; docs/security.md).
    totp_max_failures: int = 10
    trusted_proxies: list[str] = Field(default_factory=list)
    log_level: str = "INFO"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    def trusted_hosts(self) -> list[str]:
        """The Host header values accepted (see allowed_hosts)."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        from urllib.parse import urlsplit

        hosts = {urlsplit(self.base_url).hostname or "127.0.0.1", "localhost", "127.0.0.1", "::1"}
        if self.mode is Mode.TEST:
            hosts.add("testserver")
        return sorted(hosts)

    @property
    def docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.mode is not Mode.PRODUCTION

    @field_validator("stun_urls", "turn_urls", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("stun_urls", "turn_urls")
    @classmethod
    def _ice_scheme(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"ICE server URLs start with stun:, stuns:, turn: or turns: (got {url!r})")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///") and not value.startswith("sqlite+aiosqlite"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @model_validator(mode="after")
    def _require_secrets(self) -> Settings:
        missing = [
            name for name in ("session_secret", "audit_hmac_key", "data_key") if getattr(self, name) is None
        ]
        if missing and self.mode is Mode.PRODUCTION:
            names = ", ".join("TELECARE_" + n.upper() for n in missing)
            raise ValueError(f"production mode requires {names}")
        if self.session_secret is None:
            self.session_secret = SecretStr(_DEV_SECRET)
        if self.audit_hmac_key is None:
            self.audit_hmac_key = SecretStr(_DEV_SECRET + "-audit")
        if self.data_key is None:
            self.data_key = SecretStr(_DEV_DATA_KEY)
        if self.blob_backend is BlobBackend.S3 and not self.s3_bucket:
            raise ValueError("TELECARE_BLOB_BACKEND=s3 requires TELECARE_S3_BUCKET")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both TELECARE_S3_ACCESS_KEY_ID and TELECARE_S3_SECRET_ACCESS_KEY, or neither"
            )
        key = base64.urlsafe_b64decode(self.data_key.get_secret_value() + "==")
        if len(key) != 32:
            raise ValueError("TELECARE_DATA_KEY must be base64url of exactly 32 bytes")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        assert isinstance(value, SecretStr)
        return value.get_secret_value()

    @property
    def data_key_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.secret("data_key") + "==")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
