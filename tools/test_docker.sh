#!/usr/bin/env bash
# Prove the Dockerfile for real with podman, on a machine that reaches no image registry:
#   1. make a stand-in for the pinned base image (debootstrap a minimal Debian bookworm with python3, then
#      `podman import` it under the exact name the Dockerfile pins), unless that image is already present;
#   2. build the real Dockerfile, unchanged, through build_run_docker.sh (chroot isolation, host network, the
#      CA bundle pip trusts mounted over the image's so pip reaches the package index);
#   3. check the image: no data/, .venv or .git inside, default user not root, every script's --help runs;
#   4. run a tiny simulated pipeline in the container with a host data folder mounted, as the calling user,
#      and check the outputs (cubes, dataset, model, metrics, report) appear on the host owned by that user;
#   5. run the download stage as the image's own non-root user on a folder it owns.
# Needs root (apt-get, debootstrap) the first time; later runs reuse the base image and podman's layer cache.
# Usage: tools/test_docker.sh            (work folder: $STARGAL_DOCKER_WORK, default /var/tmp/stargal-docker)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${STARGAL_DOCKER_WORK:-/var/tmp/stargal-docker}"
image="${STARGAL_TEST_IMAGE:-localhost/stargal:test}"
mkdir -p "$work"
say() { echo "test_docker: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "podman, runc and debootstrap are needed (apt-get install podman runc debootstrap)"
  say "installing podman, runc, debootstrap"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap >/dev/null
fi

# podman's default ulimits cannot be applied inside this sandbox: switch them off.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"

# 1. The base image the Dockerfile pins.
base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$root/Dockerfile" | head -1)"
[ -n "$base" ] || fail "no ARG BASE_IMAGE=... line in the Dockerfile"
if podman image exists "$base"; then
  say "base image $base present"
else
  mirror="$(grep -rhoE '(URIs:|^deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  say "building a stand-in for $base: debootstrap bookworm from $mirror"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$work/rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || fail "debootstrap (log: $work/debootstrap.log)"
  tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

# 2. Build the real Dockerfile through the user-facing script.
ca="${PIP_CERT:-}"
[ -n "$ca" ] || ca="$(python3 -m pip config get global.cert 2>/dev/null || true)"
[ -n "$ca" ] || ca="${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
[ -f "$ca" ] || fail "CA bundle $ca not found"
say "building $image (CA bundle $ca)"
export STARGAL_ENGINE=podman
export STARGAL_ENGINE_OPTS="--runtime runc"
export STARGAL_BUILD_OPTS="--isolation chroot --network host -v $ca:/etc/ssl/certs/ca-certificates.crt:ro"
export STARGAL_RUN_OPTS="--network host"
previous="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
"$root/build_run_docker.sh" --image "$image" --build-only > "$work/build.log" 2>&1 || {
  tail -20 "$work/build.log" >&2
  fail "image build (log: $work/build.log)"
}

# the image this test built last time is now untagged: remove it (its layers stay cached if still used)
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$image")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi

prun() { podman --runtime runc run --rm --network host "$@"; }

# 3. What is (not) in the image, who runs it, and every script's --help.
prun --entrypoint /bin/sh "$image" -c \
  'test -z "$(ls -A /app/data)" && test ! -e /app/.venv && test ! -e /app/.git' || fail "data/, .venv or .git is in the image"
user_in_image="$(prun --entrypoint id "$image" -u)"
[ "$user_in_image" != 0 ] || fail "the image's default user is root"
say "image clean; default user id $user_in_image"
scripts="$(cd "$root/code" && ls [0-9][0-9]_*.py tune.py explain.py predict.py make_report.py 2>/dev/null | tr '\n' ' ')"
prun --entrypoint /bin/bash "$image" -c "cd /tmp && for s in $scripts; do python /app/code/\$s --help >/dev/null || { echo \"\$s --help failed\" >&2; exit 1; }; done" \
  || fail "a script's --help failed in the container"
say "--help runs in the container for: $scripts"

# 4. A tiny simulated pipeline with a host folder mounted, as the calling user.
data="$(mktemp -d "$work/data.XXXXXX")"
trap 'rm -rf "$data" "$work/own-data"' EXIT
say "tiny pipeline in the container, data in $data"
"$root/build_run_docker.sh" --image "$image" --no-build --data-dir "$data" --demo --small --workers 2 \
  > "$work/run.log" 2>&1 || { tail -30 "$work/run.log" >&2; fail "the pipeline in the container (log: $work/run.log)"; }
tail -15 "$work/run.log" >&2
for f in sas/manifest.json datasets/LATEST models/LATEST reports/report.pdf reports/pipeline/stages.json; do
  [ -s "$data/$f" ] || fail "missing on the host after the container run: $f"
done
ls "$data"/aligned/*/*/*/cube-*.fits >/dev/null 2>&1 || fail "no aligned cubes on the host"
model="$(cat "$data/models/LATEST")"
[ -s "$data/models/$model/metrics.json" ] || fail "no metrics.json for model $model"
foreign="$(find "$data" ! -user "$(id -u)" -print -quit)"
[ -z "$foreign" ] || fail "$foreign on the host is not owned by $(id -un)"
say "outputs on the host, owned by $(id -un): $(find "$data" -type f | wc -l) files"

# 5. The image's own non-root user, through the image's entrypoint (run_scripts.sh), on a folder it owns:
#    proves the environment is complete (that user could not install anything into /opt/venv).
rm -rf "$work/own-data" && mkdir -p "$work/own-data"
chown "$user_in_image" "$work/own-data"
prun -v "$work/own-data:/app/data" "$image" --demo --stages download alignment --sim-shape 200 300 --fields 80 81 -q \
  > "$work/own.log" 2>&1 || { tail -10 "$work/own.log" >&2; fail "the entrypoint as the image's own user"; }
[ -n "$(find "$work/own-data" -name 'cube-*.fits' -user "$user_in_image" -print -quit)" ] \
  || fail "no cubes written by the image's own user"
say "the image's user ($user_in_image) runs the entrypoint and writes into a mounted folder it owns"
say "PASSED"
