"""Check that a CA bundle passed to ``docker build`` as a secret left no trace in the image.

Usage: ``python scripts/check_no_secret.py IMAGE BUNDLE [--base BASE_IMAGE]``

The certificates of ``BUNDLE`` that the base image does not already trust (a proxy's own CA, typically) are
looked for in every file of every layer of ``IMAGE`` (``docker save``), by the base64 text of each
certificate and by its DER bytes, and ``docker history`` is searched for the bundle's path. Exit code 0 and
"no trace" when none is found; 1 naming the layer and file otherwise.
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


def base_trust(base: str) -> set[bytes]:
    """The certificates the base image trusts already (its /etc/ssl/certs bundle; empty if it has none)."""
    done = subprocess.run(["docker", "run", "--rm", "--entrypoint", "cat", base,
                           "/etc/ssl/certs/ca-certificates.crt"], capture_output=True, check=False)
    return set(certificates(done.stdout))


def needles(der: bytes) -> list[bytes]:
    """What a certificate looks like in a file: its DER bytes, and a 64-character line of its PEM text."""
    text = base64.b64encode(der)
    return [der, text[64:128]]  # the second PEM line: past the header bytes every certificate shares


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
    parser.add_argument("--base", help="the base image (default: none; every certificate is looked for)")
    args = parser.parse_args(argv)
    known = base_trust(args.base) if args.base else set()
    extra = [der for der in certificates(args.bundle.read_bytes()) if der not in known]
    if not extra:
        print(f"{args.bundle}: every certificate is already in {args.base}; nothing to look for")
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
    print(f"no trace: none of the {len(extra)} certificate(s) of {args.bundle} that {args.base or 'no base'} "
          f"lacks is in any of the {files} files of {args.image}'s layers, nor is the bundle in its history")
    return 0


if __name__ == "__main__":
    sys.exit(main())
