"""Tests in a real headless Chromium: opt-in (`make test-browser`), kept out of `make test` and
CI, which install no browser. They are not skipped there but not collected at all, so CI's
"no skipped test" rule stays meaningful."""

from __future__ import annotations

import os

if not os.environ.get("GPUCLOUD_BROWSER_TESTS"):
    collect_ignore_glob = ["test_*.py"]
