#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (chromedriver) are installed, for the web
# view's browser tests: installs Debian's chromium and chromium-driver packages when they are
# missing (as root, with apt-get). Prints chromedriver's path; exits non-zero (and the tests
# skip with a message) when they are missing and cannot be installed. CHROMEDRIVER names
# another chromedriver.
set -euo pipefail

driver=${CHROMEDRIVER:-$(command -v chromedriver || true)}
present() { [ -n "$driver" ] && [ -x "$driver" ] && command -v chromium >/dev/null 2>&1; }

if ! present; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium and chromedriver not found: install Debian's chromium and chromium-driver (as root: apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
  echo "installing headless Chromium (apt-get install chromium chromium-driver)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
  driver=$(command -v chromedriver || true)
  present || { echo "chromium-driver installed, but no chromedriver on PATH" >&2; exit 1; }
fi
echo "$driver"
