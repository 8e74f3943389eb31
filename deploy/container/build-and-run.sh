#!/usr/bin/env bash
# Builds the clickedge image with podman on a base made from Debian packages, runs it, clicks a
# link through it, and stops it. Needs root (debootstrap), podman, debootstrap and curl:
#   apt-get install -y podman debootstrap curl
#
# Usage: deploy/container/build-and-run.sh [BINARY]
#   BINARY: the clickedge binary to put in the image (default: target/release/clickedge, built
#   with `cargo build --release --locked` when missing).
# Environment: ISOLATION=chroot builds without an OCI runtime (hosts where crun cannot create
# cgroups, e.g. inside another container).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary="${1:-$repo/target/release/clickedge}"
base=localhost/clickedge-base:bookworm
image=localhost/clickedge:latest
name="clickedge-smoke-$$"
work="$(mktemp -d)"
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman secret rm "$name-token" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x "$binary" ]; then
  (cd "$repo" && cargo build --release --locked)
fi

# 1. The base image: a minimal Debian with CA roots, imported from a debootstrap tree.
if ! podman image exists "$base"; then
  echo "== base image from debootstrap (Debian bookworm, minbase)"
  debootstrap --variant=minbase --include=ca-certificates,tzdata bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log"
  # Nothing the runtime needs: package manager caches, docs, man pages.
  rm -rf "$work"/rootfs/var/cache/apt/* "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/*
  tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
fi

# 2. The image.
echo "== building $image"
cp "$binary" "$here/clickedge.toml" "$work/"
cp "$here/Containerfile" "$work/"
podman build --quiet --format docker --isolation "${ISOLATION:-oci}" --tag "$image" --file "$work/Containerfile" "$work" >/dev/null
podman image ls "$image" --format '{{.Repository}}:{{.Tag}} {{.Size}}'

# 3. Run it with its admin token as a secret, on free ports of the host's loopback.
echo "== running"
token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$token" | podman secret create "$name-token" - >/dev/null
podman run -d --name "$name" \
  --secret "$name-token,target=/run/secrets/clickedge-admin-token,uid=10001,mode=0400" \
  --read-only -p 127.0.0.1::8443 -p 127.0.0.1::9180 "$image" >/dev/null
https="$(podman port "$name" 8443/tcp)"
admin="$(podman port "$name" 9180/tcp)"
for _ in $(seq 1 50); do
  curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://$admin/readyz"

# 4. A domain, a link, a click.
api() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
api -X POST "http://$admin/v1/domains" -d '{"name":"links.example.com"}' >/dev/null
link="$(api -X POST "http://$admin/v1/links" \
  -d '{"domain":"links.example.com","url":"https://example.com/hello"}' | sed 's/.*"link":"\([^"]*\)".*/\1/')"
podman cp "$name:/var/lib/clickedge/ca.pem" "$work/ca.pem"
status="$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' --cacert "$work/ca.pem" \
  --resolve "links.example.com:${https##*:}:127.0.0.1" "${link/links.example.com/links.example.com:${https##*:}}")"
echo "click: $status"
case "$status" in
  "302 https://example.com/hello") ;;
  *) echo "expected a 302 to https://example.com/hello" >&2; exit 1 ;;
esac

# 5. The health check as podman runs it, then a graceful stop and the click in the log.
podman healthcheck run "$name" && echo "healthcheck: healthy"
podman stop --time 30 "$name" >/dev/null
podman logs "$name" 2>&1 | tail -n 3
echo "== stopped; exit code $(podman inspect "$name" --format '{{.State.ExitCode}}')"
