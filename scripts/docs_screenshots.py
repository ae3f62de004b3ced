"""Screenshots of the built documentation site with headless Chromium (`make docs-screenshots`).

    python scripts/docs_screenshots.py docs/_build/html docs/_build/screenshots

Takes the landing page, one guide and the API reference (errors table included) at a desktop
width and the landing page at a phone width, so a person can look at what the build produced.
Uses Debian's `chromium` (`make chromium` installs it); no network: pages are file:// URLs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES = [
    # (page, file name, width, height)
    ("index.html", "landing.png", 1280, 1000),
    ("quickstart.html", "quickstart.png", 1280, 1400),
    ("guides/downstream-grpc.html", "guide-downstream-grpc.png", 1280, 1400),
    ("reference/api.html", "api-reference.png", 1280, 1400),
    ("reference/errors.html", "errors.png", 1400, 1600),
    ("index.html", "landing-phone.png", 412, 900),
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("docs_screenshots: no chromium on PATH (make chromium installs Debian's package)")


def main(site: Path, out: Path) -> int:
    browser = chromium()
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="grpc-obo-chromium-") as profile:
        for page, name, width, height in PAGES:
            source = (site / page).resolve()
            if not source.is_file():
                print(f"docs_screenshots: {source} is missing (run make docs)", file=sys.stderr)
                failed += 1
                continue
            target = (out / name).resolve()
            target.unlink(missing_ok=True)
            subprocess.run(  # noqa: S603 (our own files, a fixed browser)
                [
                    browser,
                    "--headless",
                    "--no-sandbox",  # root in CI containers; the pages are our own files
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size={width},{height}",
                    f"--screenshot={target}",
                    source.as_uri(),
                ],
                check=False,
                capture_output=True,
                timeout=60,
            )
            if target.is_file() and target.stat().st_size > 0:
                print(f"docs_screenshots: {target}")
            else:
                print(f"docs_screenshots: no screenshot of {page}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
