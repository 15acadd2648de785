# Ordo: common tasks. `make demo` runs the pipeline on an embedded default;
# `make test` runs every test (it starts its own PostgreSQL and Kafka).

.PHONY: build test lint fmt demo clean

build:
	cargo build --release

test:
	cargo test --workspace

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt

demo:
	./scripts/demo.sh

clean:
	cargo clean
