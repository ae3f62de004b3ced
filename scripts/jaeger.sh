#!/usr/bin/env bash
# Print the path of a Jaeger 2 binary on stdout, building it from source with Go when missing.
#
#   scripts/jaeger.sh        ->  ~/.cache/grpc_obo/jaeger-v1.76.0/jaeger
#
# No PyPI, npm or Debian package ships Jaeger 2 and the test machines have no Docker engine, so
# the telemetry tests build it once with Go into a cache folder outside the repository, through a
# throwaway module (`go install ...@v1.76.0` refuses: Jaeger's go.mod has a `replace`; a `@v2.x`
# version cannot be named because the module path has no `/v2`). The first build downloads about
# 500 modules through the Go module proxy and compiles for minutes; later calls print the path.
#
# Environment:
#   JAEGER_BIN=/path/to/jaeger  use this binary (e.g. an official release download), build nothing
#   GRPC_OBO_CACHE=DIR          cache folder (default ~/.cache/grpc_obo)
#   GRPC_OBO_SKIP_JAEGER=1      when Go is missing: print nothing, exit 0, and say out loud that
#                               the Jaeger tests will be skipped (without it: a failure)
#
# Progress and errors go to stderr; stdout carries only the path.
set -euo pipefail

# The one pin. Jaeger tags each release twice: v1.76.0 (the Go module version) is Jaeger v2.13.0.
JAEGER_MODULE_VERSION="v1.76.0"
JAEGER_RELEASE="v2.13.0"
JAEGER_PACKAGE="github.com/jaegertracing/jaeger/cmd/jaeger"

say() { printf 'scripts/jaeger.sh: %s\n' "$*" >&2; }

if [ -n "${JAEGER_BIN:-}" ]; then
  if [ ! -x "$JAEGER_BIN" ]; then
    say "JAEGER_BIN=$JAEGER_BIN is not an executable file"
    exit 1
  fi
  printf '%s\n' "$JAEGER_BIN"
  exit 0
fi

cache="${GRPC_OBO_CACHE:-$HOME/.cache/grpc_obo}"
home="$cache/jaeger-$JAEGER_MODULE_VERSION"
binary="$home/jaeger"

if [ -x "$binary" ]; then
  printf '%s\n' "$binary"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [ "${GRPC_OBO_SKIP_JAEGER:-}" = "1" ]; then
    say "SKIPPING: Go is not installed and GRPC_OBO_SKIP_JAEGER=1:" \
      "the tests that need a real Jaeger will be SKIPPED (reported by pytest as skipped)."
    exit 0
  fi
  say "ERROR: Go is not installed, and the telemetry tests need a Jaeger 2 binary built with it."
  say "  Install Go >= 1.24 (https://go.dev/dl/) and run \`make jaeger\`,"
  say "  or point JAEGER_BIN at a Jaeger 2 binary (github.com/jaegertracing/jaeger/releases),"
  say "  or set GRPC_OBO_SKIP_JAEGER=1 to skip the Jaeger tests explicitly."
  exit 1
fi

mkdir -p "$home"
# One build at a time (make and pytest may both ask); the others wait, then find the binary.
exec 9>"$home/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if [ -x "$binary" ]; then
    printf '%s\n' "$binary"
    exit 0
  fi
fi

say "building Jaeger $JAEGER_RELEASE ($JAEGER_PACKAGE@$JAEGER_MODULE_VERSION) with $(go version)"
say "into $binary; a one-time build of minutes (log: $home/build.log)"

module="$home/module"
rm -rf "$module"
mkdir -p "$module"
temporary="$home/jaeger.tmp.$$"
trap 'rm -f "$temporary"' EXIT
started=$(date +%s)
if ! (
  cd "$module"
  go mod init grpc_obo_jaeger_build
  go get -tool "$JAEGER_PACKAGE@$JAEGER_MODULE_VERSION"
  # Flags as in Jaeger's release builds: static binary, no local paths, the version stamped in.
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE" \
    -o "$temporary" "$JAEGER_PACKAGE"
) >"$home/build.log" 2>&1; then
  say "ERROR: building Jaeger failed; the end of $home/build.log:"
  tail -n 30 "$home/build.log" >&2
  exit 1
fi
mv -f "$temporary" "$binary"
say "built Jaeger $JAEGER_RELEASE in $(($(date +%s) - started)) s"
printf '%s\n' "$binary"
