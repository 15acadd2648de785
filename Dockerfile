# Ordo's image: a release build on Debian, run as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY registry ./registry
COPY benches ./benches
COPY config ./config
COPY schemas ./schemas
RUN cargo build --release --locked --bin ordo

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 ordo
COPY --from=build /src/target/release/ordo /usr/local/bin/ordo
USER ordo
ENTRYPOINT ["/usr/local/bin/ordo"]
CMD ["run", "--config", "/etc/ordo/ordo.toml"]
