#!/usr/bin/env bash
# What the deployment smoke (deploy/smoke.py, tests/deploy) needs, from Debian's packages: the Docker
# engine (docker.io), debootstrap (the base image where no container registry is reachable),
# Prometheus + promtool, docker-compose (tests/deploy checks the compose files with it). Starts the
# Docker daemon when it is not running, and fails when it cannot be had: CI must not pass without it.
#
# The daemon is started with no bridge and no iptables rules: the smoke runs every container with
# host networking on loopback (`docker run --network host`), and builds with `--network host`.
set -euo pipefail

need=()
for pair in dockerd:docker.io debootstrap:debootstrap prometheus:prometheus promtool:prometheus \
            docker-compose:docker-compose; do
    command -v "${pair%%:*}" > /dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "install-smoke-deps: missing ${need[*]} and not root; apt-get install them" >&2
        exit 1
    fi
    apt-get update -q > /dev/null
    # Keep the packages' services from starting (Debian's prometheus on :9090, docker with a bridge):
    # the smoke runs its own Prometheus, and dockerd is started below as the smoke needs it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # shellcheck disable=SC2046 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $(printf '%s\n' "${need[@]}" | sort -u) > /dev/null
fi

if ! docker info > /dev/null 2>&1; then
    log=/var/log/trm-smoke-dockerd.log
    echo "install-smoke-deps: starting dockerd (log: $log)" >&2
    nohup dockerd --bridge=none --iptables=false --ip6tables=false > "$log" 2>&1 &
    for _ in $(seq 60); do
        docker info > /dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info > /dev/null 2>&1; then
        echo "install-smoke-deps: dockerd did not start; its log:" >&2
        tail -20 "$log" >&2
        exit 1
    fi
fi
echo "install-smoke-deps: docker $(docker version -f '{{.Server.Version}}'), $(debootstrap --version)," \
     "$(promtool --version 2>&1 | head -1)" >&2
