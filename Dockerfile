# CMP's three binaries in one image: cmp-operator, cmp-gateway, cmp-webhook.
# The chart runs each with its own command. For people with Docker:
#
#   docker build -t ghcr.io/gsvdev/cmp:0.1.0 .
#
# Without Docker, `cargo xtask image` builds the same image as an OCI layout
# (the base from Debian's packages); xtask/tests/image.rs runs it with runc.

FROM rust:1.95-bookworm AS build
# git2's HTTPS and SSH transports link OpenSSL (libgit2 and libssh2 are built from source).
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cmp-operator -p cmp-gateway -p cmp-webhook \
    && mkdir /out && cp target/release/cmp-operator target/release/cmp-gateway target/release/cmp-webhook /out/

# distroless cc: glibc, libgcc_s (every Rust binary links it for unwinding; the
# `base` image lacks it), libssl3, CA certificates; runs as uid 65532 (the chart's runAsUser).
FROM gcr.io/distroless/cc-debian12:nonroot
# The operator also links zlib (libgit2); the gateway and webhook need only glibc.
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/cmp-operator"]
