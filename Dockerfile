# Multi-stage build: compile with the locked dependency set, run slim and unprivileged.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs clippy.toml ./
COPY src ./src
# Every workspace member's manifest (and sources) must be here for Cargo to load the workspace.
COPY crates ./crates
COPY migrations ./migrations
COPY config ./config
COPY assets ./assets
RUN cargo build --release --locked --bin outagewatch

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/outagewatch --create-home outagewatch
COPY --from=build /src/target/release/outagewatch /usr/local/bin/outagewatch
USER outagewatch
WORKDIR /var/lib/outagewatch
ENV OUTAGEWATCH__HTTP__LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["outagewatch"]
CMD ["serve"]
