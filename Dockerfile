# Ordo's image: a release build on Debian, run as an unprivileged user.
# librdkafka is built with TLS (Debian's OpenSSL), SASL (PLAIN, SCRAM,
# OAUTHBEARER with OIDC through libcurl, GSSAPI through Cyrus SASL) and every
# compression codec; scripts/setup.sh installs the same build packages as
# `make build` does on a Debian machine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY scripts/setup.sh ./scripts/setup.sh
COPY Cargo.toml Cargo.lock ./
RUN ./scripts/setup.sh build && rm -rf /var/lib/apt/lists/*
COPY src ./src
COPY registry ./registry
COPY benches ./benches
COPY config ./config
COPY schemas ./schemas
COPY examples ./examples
RUN cargo build --release --locked --bin ordo

FROM debian:bookworm-slim
# Runtime libraries of the build above; curl for the health check.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl libssl3 libsasl2-2 libsasl2-modules libsasl2-modules-gssapi-mit libcurl4 \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 ordo
COPY --from=build /src/target/release/ordo /usr/local/bin/ordo
USER 10001
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/ordo"]
CMD ["run", "--config", "/etc/ordo/ordo.toml"]
