#!/usr/bin/env bash
# System packages the test suite uses: Debian's Chromium for the leaderboard browser test.
# Installed only when missing and when we may (root with apt-get); otherwise say what to do.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "note: install Debian's 'chromium' package for the browser test (it is skipped without it)" >&2
fi
