#!/usr/bin/env bash
# Build the stargal image and run the pipeline in it, with the host's data folder mounted at /app/data.
# Uses docker when a Docker engine answers, podman otherwise. Files written to data/ belong to you
# (the container runs with your user and group ids).
#
#   ./build_run_docker.sh                         build, then the demo (./run_scripts.sh --demo) in the container
#   ./build_run_docker.sh --demo --small --workers 2    any run_scripts.sh option passes through
#   ./build_run_docker.sh --data-dir /big/disk/stargal --no-build --demo --fields 80 103
#
# Own options: --data-dir DIR (host folder to mount, default ./data), --image NAME (default stargal:latest),
# --no-build, --build-only. With no pipeline options the image's default (--demo) runs.
# Extra engine options, for unusual hosts: STARGAL_ENGINE (docker|podman), STARGAL_ENGINE_OPTS (before the
# subcommand, e.g. "--runtime runc"), STARGAL_BUILD_OPTS and STARGAL_RUN_OPTS (after build / run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="$root/data"
image="${STARGAL_IMAGE:-stargal:latest}"
build=1
run=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="${2:?--data-dir needs a folder}"; shift 2 ;;
    --data-dir=*) data_dir="${1#*=}"; shift ;;
    --image) image="${2:?--image needs a name}"; shift 2 ;;
    --image=*) image="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    --build-only) run=0; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

engine="${STARGAL_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    echo "build_run_docker.sh: error: neither a running Docker engine nor podman found" >&2
    exit 2
  fi
fi
read -r -a engine_opts <<< "${STARGAL_ENGINE_OPTS:-}"
read -r -a build_opts <<< "${STARGAL_BUILD_OPTS:-}"
read -r -a run_opts <<< "${STARGAL_RUN_OPTS:-}"

if [ "$build" = 1 ]; then
  echo "==> $engine build -t $image $root" >&2
  "$engine" "${engine_opts[@]}" build "${build_opts[@]}" -t "$image" "$root"
fi
[ "$run" = 1 ] || exit 0

mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"
uid="$(id -u)"
gid="$(id -g)"
user_opts=(--user "$uid:$gid" -e HOME=/tmp)
# Rootless podman maps container root to you; keep-id maps your own id through instead.
if [ "$engine" = podman ] && [ "$uid" != 0 ]; then
  user_opts+=(--userns=keep-id)
fi
tty_opts=()
[ -t 0 ] && [ -t 1 ] && tty_opts=(-it)
echo "==> $engine run $image ${args[*]:-(default: --demo)} with $data_dir mounted at /app/data" >&2
exec "$engine" "${engine_opts[@]}" run --rm "${tty_opts[@]}" "${user_opts[@]}" "${run_opts[@]}" \
  -v "$data_dir:/app/data" "$image" "${args[@]}"
