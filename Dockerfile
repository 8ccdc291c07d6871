# CMP's three binaries in one image: cmp-operator, cmp-gateway, cmp-webhook.
# The chart runs each with its own command. No image can be built on the
# development machines (no Docker engine); this file is kept simple to read.
#
#   docker build -t ghcr.io/gsvdev/cmp:0.1.0 .

FROM rust:1.95-bookworm AS build
# git2's HTTPS and SSH transports link OpenSSL (libgit2 and libssh2 are built from source).
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cmp-operator -p cmp-gateway -p cmp-webhook \
    && mkdir /out && cp target/release/cmp-operator target/release/cmp-gateway target/release/cmp-webhook /out/

# distroless base: glibc, libssl3, CA certificates; runs as uid 65532 (the chart's runAsUser).
FROM gcr.io/distroless/base-debian12:nonroot
# The operator also links zlib (libgit2); the gateway and webhook need only glibc.
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/cmp-operator"]
