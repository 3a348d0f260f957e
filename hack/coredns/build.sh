#!/usr/bin/env bash
# Builds CoreDNS from the Go module proxy into a per-machine cache keyed by version, so
# it is built once (a few minutes on 2 cores). A static binary (CGO_ENABLED=0), as the
# upstream image's /coredns, so it runs in an image with nothing else in it.
# Usage: build.sh [OUT_DIR]   (default: $VK_FARGATE_CACHE/coredns/<coredns version>)
# Prints the output directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1=="github.com/coredns/coredns" {print $2; exit}' "$here/go.mod")
cache=${VK_FARGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fargate}
out=${1:-$cache/coredns/$version}
mkdir -p "$out"

if [ -x "$out/coredns" ]; then
  echo "cached: $out/coredns" >&2
else
  echo "building coredns $version" >&2
  # GitCommit is what `coredns -version` prints after the version; upstream's Makefile
  # sets it the same way, from the release's tag here.
  (cd "$here" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$version" \
    -o "$out/coredns.tmp" github.com/coredns/coredns)
  mv "$out/coredns.tmp" "$out/coredns"
fi
echo "coredns=$version" > "$out/VERSIONS"
echo "$out"
