"""Key files (roots and certified issuers): read, write, certify, describe (`cx keys`: cx/keys.py).

Format: docs/keys-and-alerts.md. Files hold private seeds: written 0600, never
overwritten unless the caller asks (--force).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tools.envelope import (
    KeyPair,
    b64d,
    b64e,
    check_kid,
    check_scope,
    check_use,
    decode_jws,
    make_cert,
    pub_bytes,
    scope_covers,
)

NBF_BACKDATE = 300  # s: a fresh certificate is valid on terminals whose clock lags (cf. rule 9)
DAY = 86400


class KeyFileError(ValueError):
    """A key file that cannot be read or does not hold a consistent key."""


# --- files ----------------------------------------------------------------------------


def keypair_to_json(kp: KeyPair) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": kp.kind, "kid": kp.kid}
    if kp.priv is not None:
        doc["priv"] = b64e(kp.priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    doc.update(pub=kp.pub_b64, scope=list(kp.scope), use=list(kp.use))
    if kp.crt is not None:
        doc["crt"] = kp.crt
    if kp.nbf is not None:
        doc["nbf"] = kp.nbf
    if kp.exp is not None:
        doc["exp"] = kp.exp
    return doc


def keypair_from_json(doc: object, where: str = "key file") -> KeyPair:
    if not isinstance(doc, dict):
        raise KeyFileError(f"{where}: not a JSON object")
    try:
        kind = doc.get("kind")
        if kind not in ("root", "issuer"):
            raise ValueError(f"kind must be root or issuer, got {kind!r}")
        pub = pub_bytes(doc["pub"])
        priv = None
        if doc.get("priv") is not None:
            seed = b64d(doc["priv"])
            if len(seed) != 32:
                raise ValueError("priv must be a 32-byte seed")
            priv = Ed25519PrivateKey.from_private_bytes(seed)
            if pub_bytes(priv) != pub:
                raise ValueError("priv and pub do not belong together")
        crt = doc.get("crt")
        if kind == "issuer" and not isinstance(crt, str):
            raise ValueError("an issuer key needs its crt")
        kp = KeyPair(kind=kind, kid=check_kid(doc.get("kid")), pub=pub,
                     scope=check_scope(doc.get("scope") or ()), use=check_use(doc.get("use") or ()),
                     priv=priv, crt=crt, nbf=doc.get("nbf"), exp=doc.get("exp"))
    except KeyError as e:
        raise KeyFileError(f"{where}: missing field {e.args[0]}") from None
    except ValueError as e:
        raise KeyFileError(f"{where}: {e}") from None
    return kp


def load_keyfile(path: str | os.PathLike[str]) -> KeyPair:
    """Read a key file; raises KeyFileError (a ValueError) with a one-line reason."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: not a JSON key file ({e})") from None
    return keypair_from_json(doc, str(path))


def write_private(path: str | os.PathLike[str], text: str, *, force: bool = False,
                  mode: int = 0o600) -> None:
    """Write a file with `mode` from the start; refuse an existing one unless force."""
    p = Path(path)
    if not force:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise KeyFileError(f"{p} exists (use --force to overwrite)") from None
        except OSError as e:
            raise KeyFileError(f"{p}: {e.strerror or e}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return
    # --force: replace atomically, so a crash never leaves half a key behind.
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent or ".", prefix=f".{p.name}.")
    except OSError as e:
        raise KeyFileError(f"{p}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_keyfile(path: str | os.PathLike[str], kp: KeyPair, *, force: bool = False) -> None:
    write_private(path, json.dumps(keypair_to_json(kp), indent=2) + "\n", force=force)


# --- operations -----------------------------------------------------------------------


def new_issuer(root: KeyPair, kid: str, scope: list[str], use: list[str],
               nbf: int, exp: int) -> KeyPair:
    """A fresh issuer key certified by root; refuses scope or use beyond the root's."""
    if root.kind != "root":
        raise ValueError(f"{root.kid} is an issuer key; issuers are certified by a root")
    if root.priv is None:
        raise ValueError(f"root {root.kid} has no private key")
    outside = [p for p in scope if not scope_covers(root.scope, p)]
    if outside:
        raise ValueError(f"scope {','.join(outside)} lies outside root {root.kid}'s scope "
                         f"{','.join(root.scope)}")
    extra = [u for u in use if u not in root.use]
    if extra:
        raise ValueError(f"use {','.join(extra)} is not granted by root {root.kid} "
                         f"(use {','.join(root.use)})")
    if not nbf < exp:
        raise ValueError(f"validity must end after it starts (nbf {nbf}, exp {exp})")
    kp = KeyPair.generate("issuer", kid, scope, use)
    kp.nbf, kp.exp = nbf, exp
    kp.crt = make_cert(root, kp.kid, kp.pub, kp.scope, kp.use, nbf, exp)
    return kp


def fmt_time(t: int | None) -> str:
    """An epoch time for people: UTC, then the epoch seconds in brackets; "-" for none."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t)) + f" ({t})"


def describe(kp: KeyPair, now: int | None = None) -> list[str]:
    """The human summary of `cx keys show` (never the private key)."""
    now = int(time.time()) if now is None else now
    lines = [
        f"kind:    {kp.kind}",
        f"kid:     {kp.kid}",
        f"pub:     {kp.pub_b64}",
        f"scope:   {','.join(kp.scope)}",
        f"use:     {','.join(kp.use)}",
        f"private: {'yes' if kp.priv is not None else 'no (public only)'}",
    ]
    if kp.kind == "root":
        lines.append("valid:   no expiry (trust anchor)")
        return lines
    if kp.nbf is not None and kp.exp is not None:
        state = ("not yet valid" if now < kp.nbf else "expired" if now >= kp.exp else "valid")
        lines.append(f"valid:   {fmt_time(kp.nbf)} .. {fmt_time(kp.exp)}: {state}")
    if kp.crt:
        try:
            hdr, body, _ = decode_jws(kp.crt)
            cert = json.loads(body)
            ok = cert.get("kid") == kp.kid and cert.get("pub") == kp.pub_b64
            lines.append(f"cert:    signed by {hdr.get('kid')}"
                         + ("" if ok else " (DOES NOT MATCH THIS KEY)"))
        except ValueError as e:
            lines.append(f"cert:    unreadable ({e})")
    return lines
