#!/bin/sh
# Container health check for the Crusty Ring image (installed as
# /usr/local/bin/crustyring-healthcheck). Probes the process in this container
# on 127.0.0.1; exits 0 when healthy, 1 otherwise (Docker's meanings).
#
#   crustyring-healthcheck                       a node's /healthz, else the registry's gRPC health
#   crustyring-healthcheck http [PATH [PORT]]    GET PATH (default /healthz) on a node
#   crustyring-healthcheck grpc [PORT]           grpc.health.v1 Check (service "") is SERVING
#
# PORT defaults to $CRUSTYRING_PORT, else 50001 (http) or 50000 (grpc: the registry;
# a node answers it too, SERVING only while it serves its arc).
#
# TLS: when CRUSTY_TLS_CERT is set (the environment the process reads its
# certificate from: pass TLS by environment, not flags, for this check to see it),
# both checks use https and do not verify the certificate (curl --insecure). They
# call the process in this container on 127.0.0.1, a name its certificate does not
# hold, and nothing between them can intercept; like the kubelet's probes, they
# only ask whether it answers. The CA (CRUSTY_TLS_CA) is not needed here.
set -eu

if [ -n "${CRUSTY_TLS_CERT:-}" ]; then
  scheme=https
  tls_opts="--insecure"
  h2_opt="--http2"
else
  scheme=http
  tls_opts=""
  h2_opt="--http2-prior-knowledge"
fi

http() { # PATH PORT
  curl --fail --silent --show-error --max-time 3 --output /dev/null $tls_opts \
    "$scheme://127.0.0.1:$2$1"
}

grpc() { # PORT
  # An empty HealthCheckRequest in one gRPC frame (uncompressed, length 0); the
  # answer SERVING is the frame 00 00000002 0801 (field 1, status = 1).
  reply=$(printf '\000\000\000\000\000' |
    curl --silent --show-error --max-time 3 "$h2_opt" $tls_opts \
      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
      "$scheme://127.0.0.1:$1/grpc.health.v1.Health/Check" | od -An -tx1 | tr -d ' \n')
  if [ "$reply" = "00000000020801" ]; then return 0; fi
  echo "not SERVING (reply: ${reply:-none})" >&2
  return 1
}

# Curl's own exit codes become 1: Docker reads 1 as unhealthy (2 is reserved).
case "${1:-auto}" in
auto)
  # One image, two roles: a node listens on 50001, the registry on 50000.
  http /healthz "${CRUSTYRING_PORT:-50001}" 2>/dev/null || grpc 50000 || exit 1
  ;;
http) http "${2:-/healthz}" "${3:-${CRUSTYRING_PORT:-50001}}" || exit 1 ;;
grpc) grpc "${2:-${CRUSTYRING_PORT:-50000}}" || exit 1 ;;
*)
  echo "usage: crustyring-healthcheck [http [PATH [PORT]] | grpc [PORT]]" >&2
  exit 1
  ;;
esac
