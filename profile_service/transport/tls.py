"""TLS and mTLS server credentials whose certificate follows its files (cert-manager rotation).

gRPC asks `_CertificateFiles.fetch` before every TLS handshake (grpc's own
dynamic_ssl_server_credentials). It compares the files' identity (inode, size, modification
time: kubelet swaps a symlink, cert-manager rewrites in place) with the last read, and only on
a change reads them again. A half-written rotation (a certificate that does not match its
key yet) keeps the previous pair until the files agree, so no handshake fails for it.
"""

import logging
import os
import threading
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

_LOGGER = logging.getLogger(__name__)


class UnusableCertificate(ValueError):
    """The files do not hold a PEM certificate chain with its matching private key (or a PEM
    CA bundle)."""


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate chain, its key and (mTLS) the client CA bundle live."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file, in a fixed order."""
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ()
        )


@dataclass(frozen=True)
class _Loaded:
    chain: bytes
    key: bytes
    client_ca: bytes | None


def load(files: TlsFiles) -> _Loaded:
    """Read and check the files; raise UnusableCertificate naming what is wrong."""
    chain, key = _read(files.cert_file), _read(files.key_file)
    try:
        certificate = x509.load_pem_x509_certificates(chain)[0]
    except ValueError as exc:
        raise UnusableCertificate(f"{files.cert_file}: no PEM certificate") from exc
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise UnusableCertificate(f"{files.key_file}: no unencrypted PEM private key") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if certificate.public_key().public_bytes(
        encoding, public
    ) != private_key.public_key().public_bytes(encoding, public):
        raise UnusableCertificate(f"{files.key_file} is not the key of {files.cert_file}")
    client_ca = None
    if files.client_ca_file:
        client_ca = _read(files.client_ca_file)
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError as exc:
            raise UnusableCertificate(f"{files.client_ca_file}: no PEM certificate") from exc
    return _Loaded(chain, key, client_ca)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """TLS credentials from `files`, re-read when they change; client certificates signed by
    files.client_ca_file are required when it is set (mTLS)."""
    certificates = _CertificateFiles(files)
    return grpc.dynamic_ssl_server_credentials(
        certificates.configuration(),
        # types-grpcio says the fetcher must return a configuration; grpc documents None as
        # "no change", which is what fetch returns when the files did not change.
        certificates.fetch,  # type: ignore[arg-type]
        require_client_authentication=files.client_ca_file is not None,
    )


class _CertificateFiles:
    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._identity = self._stat()
        self._loaded = load(files)
        self._refused: tuple[tuple[int, int, int], ...] | None = None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._loaded.key, self._loaded.chain)], root_certificates=self._loaded.client_ca
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed and agree, else None (keep the current).
        Never raises: an exception here would fail the handshake."""
        try:
            with self._lock:
                identity = self._stat()
                if identity in (self._identity, self._refused):
                    return None
                try:
                    self._loaded = load(self._files)
                except (UnusableCertificate, OSError) as exc:
                    self._refused = identity  # logged once per change, not per handshake
                    _LOGGER.warning("TLS files changed but are unusable, keeping the old: %s", exc)
                    return None
                self._identity = identity
                _LOGGER.info("TLS certificate reloaded from %s", self._files.cert_file)
                return self.configuration()
        except Exception:  # a bug here must not refuse every connection
            _LOGGER.exception("TLS certificate check failed; keeping the current certificate")
            return None

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        identities = []
        for path in self._files.paths:
            try:
                st = os.stat(path)
            except OSError:
                identities.append((0, 0, 0))
                continue
            identities.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(identities)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UnusableCertificate(f"{path}: {exc.strerror}") from exc
