# On a fresh clone: `make run` (serve the demo feed), `make watch` (print it) and `make test`.
# Everything is bootstrapped from the committed uv.lock: uv itself (into .tools/
# when it is not on PATH) and the locked environment (.venv/).

UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
SYNC := --locked --all-packages --all-groups
export UV_PYTHON_DOWNLOADS := never
export NO_MKDOCS_2_WARNING := 1

.PHONY: run watch test lint typecheck docs docs-serve asyncapi asyncapi-check package-check schema bench bench-plots soak-plot screenshot dashboard-fps ci sync clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

sync: | $(UV)
	$(UV) sync $(SYNC)

## Serve the stream on ws://127.0.0.1:8000/ws/quotes (with --demo, the built-in feed, unless QUOTES_REDIS_URL/--redis-url is set).
run: sync
	$(UV) run $(SYNC) quotes-server $(if $(or $(QUOTES_REDIS_URL),$(findstring --redis-url,$(ARGS))),,--demo) $(ARGS)

## Print the stream `make run` serves, with the project's own quotes-client (Ctrl-C stops it).
## Other tickers: TICKERS=NVDA,TSLA; another port: QUOTES_PORT (the one `make run` took too).
TICKERS ?= AAPL,MSFT
WATCH_URL ?= ws://127.0.0.1:$(or $(QUOTES_PORT),8000)/ws/quotes
watch: sync
	$(UV) run $(SYNC) quotes-client $(WATCH_URL) --tickers $(TICKERS) $(ARGS)

## Run the whole test suite (needs redis-server on PATH; tests start private instances):
## on TEST_WORKERS (default 3) pytest-xdist workers, then the load tests alone.
test: sync
	$(UV) run $(SYNC) python scripts/run_tests.py $(ARGS)

lint: sync
	$(UV) run $(SYNC) ruff check .
	$(UV) run $(SYNC) ruff format --check .

typecheck: sync
	$(UV) run $(SYNC) mypy

docs: sync
	$(UV) run $(SYNC) mkdocs build --strict

docs-serve: sync
	$(UV) run $(SYNC) mkdocs serve -a 127.0.0.1:8001

## The stream's AsyncAPI 3.0 document and its docs page, generated from the code.
asyncapi: sync
	$(UV) run $(SYNC) python -m quotes_server.asyncapi --docs docs

## Validate docs/asyncapi.json with the official parser (@asyncapi/parser, from the lock file).
asyncapi-check:
	cd scripts/asyncapi && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	node scripts/asyncapi/validate.mjs docs/asyncapi.json

## Build the three packages' wheels and sdists and check them in a clean venv outside the
## workspace (imports, --help, the pytest plugin, quotes-core without server dependencies).
package-check: | $(UV)
	python3 scripts/package_check.py --uv $(UV)

## Regenerate docs/quote.schema.json from the Quote model.
schema: sync
	$(UV) run $(SYNC) python -c "import json, quotes_core; print(json.dumps(quotes_core.wire_json_schema(), indent=2))" > docs/quote.schema.json

## Run the benchmark (ARGS: its options); its report and SVG plots go to bench-results/.
BENCH_RESULTS ?= bench-results
bench: sync
	$(UV) run $(SYNC) python scripts/benchmark/ws_latency_benchmark.py --results $(BENCH_RESULTS) $(ARGS)

## Regenerate the performance page's plots (docs/img/bench/) from its reports (docs/data/).
bench-plots: sync
	$(UV) run $(SYNC) python scripts/benchmark/plots.py docs/data/*.json --out docs/img/bench

## Plot a soak report (JSON=file written with --scenario soak --output) into
## docs/img/soak.svg and print its figures for docs/performance.md.
soak-plot: sync
	$(UV) run $(SYNC) python scripts/benchmark/soak_plot.py $(JSON) --svg docs/img/soak.svg

## Regenerate docs/img/dashboard.png (headless Chromium against a demo-feed server).
screenshot: sync
	$(UV) run $(SYNC) python scripts/dashboard.py screenshot docs/img/dashboard.png

## Frames per second of the dashboard at 3,000 quotes/s over 300 tickers.
dashboard-fps: sync
	$(UV) run $(SYNC) python scripts/dashboard.py fps $(ARGS)

ci:
	bash .ci/run

clean:
	rm -rf .venv .tools site .mypy_cache .ruff_cache .pytest_cache
