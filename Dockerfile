# syntax=docker/dockerfile:1
# Crusty Ring image: the binaries `dht` (a node), `registry` and `crustyring` (the
# client). One image for both roles; the default command runs a node.
#   docker build -t crustyring .
# See README.md, "Deploying".

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# protox compiles the protos in Rust: no system protoc. The cache mounts keep the
# crates.io downloads and the build between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dht --bin registry --bin crustyring \
 && mkdir /out \
 && cp target/release/dht target/release/registry target/release/crustyring /out/

FROM debian:bookworm-slim
# curl (with HTTP/2) for the health check; versions follow Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 crustyring \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin crustyring \
 && mkdir /data \
 && chown crustyring:crustyring /data
COPY --from=builder /out/ /usr/local/bin/
COPY deploy/healthcheck.sh /usr/local/bin/crustyring-healthcheck
# Plain logs (no ANSI colours) for log collectors.
ENV NO_COLOR=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 50000: the registry (gRPC); 50001: a node (gRPC, HTTP/JSON, /healthz, /readyz, /metrics).
EXPOSE 50000 50001
# Liveness: a node's /healthz on 50001 (CRUSTYRING_PORT to change), else the
# registry's gRPC health on 50000; see deploy/healthcheck.sh.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["crustyring-healthcheck"]
# A node. Give it --host (the name others reach it by) and the registry, e.g.
#   docker run -e NODE_HOSTNAME=node1 -e REGISTRY_HOSTNAME=registry crustyring
# On SIGTERM it hands its keys to its predecessor first: stop it with a grace
# period of 60 s (docker stop -t 60).
CMD ["dht", "50001", "--bind", "0.0.0.0", "--data-dir", "/data"]
