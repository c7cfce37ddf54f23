#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser). Playwright (the `test` extra) only drives it;
# its own browser downloads (`playwright install`) are never used. A no-op when chromium is installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tests/browser: no chromium and no apt-get; install Chromium yourself (the browser tests skip without it)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
