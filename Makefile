# The README's quick start. Each target installs missing build prerequisites first.
.PHONY: demo test plugins bench load prerequisites

prerequisites:
	@scripts/prerequisites.sh

## Run the proxy on the embedded demo (127.0.0.1:8080, two in-process backends).
demo: prerequisites
	cargo run --release -- demo

## Run every test (unit, SDK test kit, integration over real sockets).
test: prerequisites
	cargo test --workspace

## Rebuild the built-in and fixture components (plugins/dist, tests/fixtures/dist).
plugins: prerequisites
	plugins/build.sh

## Criterion bench of one call per plugin role, then the load comparison.
bench: prerequisites
	cargo bench --bench plugin_calls
	cargo bench --bench reload
load: prerequisites
	benches/load.sh
