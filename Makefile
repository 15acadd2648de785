# Ordo: common tasks. `make demo` runs the pipeline on an embedded default;
# `make test` runs every test (it starts its own PostgreSQL, Kafka, Schema
# Registry and Prometheus). Both first install what is missing
# (scripts/setup.sh) and do nothing more when it is all there.

.PHONY: build test lint fmt demo setup clean

build:
	./scripts/setup.sh build
	cargo build --release

test:
	./scripts/setup.sh test
	cargo test --workspace

lint:
	./scripts/setup.sh build
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt

demo:
	./scripts/demo.sh

setup:
	./scripts/setup.sh test

clean:
	cargo clean
