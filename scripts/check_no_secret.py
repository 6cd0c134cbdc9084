"""Check that a CA bundle passed to ``docker build`` as a secret left no trace in the image.

Usage: ``python scripts/check_no_secret.py IMAGE BUNDLE [--base BASE_IMAGE]``

The certificates of ``BUNDLE`` that are not public (neither in the base image's trust store nor in the
Mozilla lists that certifi and pip install in the image): a proxy's own CA, typically, are looked for in
every file of every layer of ``IMAGE`` (``docker save``), by their DER bytes and by their whole PEM
text, and ``docker history`` is searched for the bundle's path. Exit code 0 and "no trace" when none is
found; 1 naming the layer and file otherwise.
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)


def certificates(pem: bytes) -> list[bytes]:
    """The DER bytes of every certificate in a PEM bundle."""
    return [base64.b64decode(b"".join(body.split())) for body in _PEM.findall(pem)]


def trust_store(image: str, path: str) -> set[bytes]:
    """The certificates of the PEM bundle at ``path`` inside ``image`` (none if it has no such file)."""
    done = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", f"cat {path}"],
                          capture_output=True, check=False)
    return set(certificates(done.stdout))


def public_certificates(image: str, base: str | None) -> set[bytes]:
    """Certificates that are no secret: the base image's trust store and the Mozilla lists that certifi
    and pip (its own copy of certifi, often older) install in ``image``, unchanged from their wheels."""
    known = trust_store(base, "/etc/ssl/certs/ca-certificates.crt") if base else set()
    for module in ("certifi", "pip._vendor.certifi"):  # the file itself: Debian's pip patches where()
        locate = f"import os, {module} as m; print(os.path.join(os.path.dirname(m.__file__), 'cacert.pem'))"
        known |= trust_store(image, f'"$(python -c "{locate}")"')
    return known


def needles(der: bytes) -> list[bytes]:
    """What a certificate looks like in a file: its DER bytes, and its whole PEM body (64-character lines).

    Whole bodies only: related certificates (a CA's renewed root) share single lines.
    """
    text = base64.b64encode(der)
    return [der, b"\n".join(text[start:start + 64] for start in range(0, len(text), 64))]


def layer_files(image: str, scratch: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(layer, path, content)`` of every regular file in every layer of ``image``."""
    archive = scratch / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), image], check=True)
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile() or not (member.name.endswith("layer.tar") or "/blobs/" in member.name):
                continue
            blob = outer.extractfile(member)  # read in place: a layer can be gigabytes
            if not tarfile.is_tarfile(blob):
                continue  # a config or manifest blob, not a layer
            blob.seek(0)
            with tarfile.open(fileobj=blob) as inner:
                for item in inner.getmembers():
                    if item.isfile():
                        yield member.name, item.name, inner.extractfile(item).read()


def main(argv: list[str] | None = None) -> int:
    """Search the image; print the verdict; 0 when there is no trace of the secret."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--base", help="the base image, whose trust store is public (default: none)")
    args = parser.parse_args(argv)
    known = public_certificates(args.image, args.base)
    extra = [der for der in certificates(args.bundle.read_bytes()) if der not in known]
    if not extra:
        print(f"{args.bundle}: every certificate is a public one; nothing secret to look for")
        return 1
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", args.image],
                             capture_output=True, text=True, check=True).stdout
    found = [f"docker history names {args.bundle}"] if str(args.bundle) in history else []
    patterns = [needle for der in extra for needle in needles(der)]
    with tempfile.TemporaryDirectory(prefix="secret-check-") as scratch:
        files = 0
        for layer, path, content in layer_files(args.image, Path(scratch)):
            files += 1
            if any(pattern in content for pattern in patterns):
                found.append(f"{layer}: {path}")
    if found:
        print("the secret left a trace:\n  " + "\n  ".join(found))
        return 1
    print(f"no trace: none of the {len(extra)} non-public certificate(s) of {args.bundle} is in any of the "
          f"{files} files of {args.image}'s layers, nor is the bundle named in its history")
    return 0


if __name__ == "__main__":
    sys.exit(main())
