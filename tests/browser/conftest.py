"""Tests in a real headless Chromium: `make test-browser` (which .ci/run calls, installing
Debian's chromium when missing), kept out of `make test` so the README's test command needs no
browser. Elsewhere they are not skipped but not collected at all, so CI's "no skipped test" rule
stays meaningful."""

from __future__ import annotations

import os

if not os.environ.get("GPUCLOUD_BROWSER_TESTS"):
    collect_ignore_glob = ["test_*.py"]
