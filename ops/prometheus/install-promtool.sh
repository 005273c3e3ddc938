#!/usr/bin/env bash
# Puts promtool (Prometheus's rule checker) at $1 for the alert-rule tests (tests/deploy/test_alerts.py):
# a promtool already on PATH, else the one in Debian's `prometheus` package, downloaded and unpacked
# without installing it (no root, no service started). Elsewhere it says so and the test skips.
set -euo pipefail
dest=$1
if found=$(command -v promtool); then
  ln -sf "$found" "$dest"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "promtool not found and no apt-get here: the alert-rule tests will skip (install Prometheus's promtool to run them)" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) && dpkg-deb -x "$work"/prometheus_*.deb "$work/x"; then
  install -m 0755 "$work/x/usr/bin/promtool" "$dest"
else
  echo "could not download Debian's prometheus package: the alert-rule tests will skip" >&2
fi
