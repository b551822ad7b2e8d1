#!/usr/bin/env bash
# Installs the Debian packages svite builds and runs with, only those that are missing.
# Idempotent: with everything present it changes nothing and runs no apt-get at all.
set -euo pipefail

# The last one is for the tests only: the Prometheus project's own parser reads svite's
# /metrics text in a test.
packages=(pkg-config libzmq3-dev libopenblas-dev libdnnl-dev liblz4-dev zlib1g-dev libcairo2-dev fonts-dejavu-core libcurl4-openssl-dev libturbojpeg0-dev libpng-dev dataset-fashion-mnist python3-prometheus-client)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: 'swift' is not on PATH. Install Swift 6.x for Linux (https://www.swift.org/install/) and retry." >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present (${packages[*]})"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_cmd=(sudo)
  else
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    echo "setup: run 'sudo bash deploy/setup.sh', or 'sudo apt-get install ${missing[*]}'" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
