# Entry points for people and CI. Each target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Flower's CLI keeps its connections in $FLWR_HOME; this project's are in .flwr/.
export FLWR_HOME ?= $(CURDIR)/.flwr
# The venv's programs first, from any shell: `flwr run` starts flower-superlink by
# name, and must start this checkout's, not another Flower on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Where a host simulation's ServerApp saves each run's model (outputs/run-<id>/).
export APP_OUTPUT_DIR ?= $(CURDIR)/outputs
# Dependencies are installed here, not at run time; and no phoning home.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
# A host simulation runs Ray on this machine alone: without this, Ray joins whatever
# cluster a stale `ray start` left behind, or waits for it forever. Set RAY_ADDRESS
# to join a cluster on purpose.
RAY_ADDRESS ?= local
export RAY_ADDRESS
# The images' tag: the project's version, stated once in pyproject.toml (compose files' defaults
# and .env say the same: tests/test_image_version.py).
export FLOWERDOCK_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -1)

.PHONY: install cli images federation federation-aggregated sites site-bundle federation-sites simulation-docker simulation-ray ray-certs report test test-fast flower-next simulation simulation-stop bench bench-round bench-model-size bench-simulation bench-faults bench-commands bench-ray bench-superlink bench-gateway constraints lock down clean help

# Every file checked against its sha256 in locks/host.txt (CPython 3.11), installed as locked
# (--no-deps: the lock is the whole set); the project itself editable, built by the locked
# hatchling (no build isolation: nothing unlocked is fetched); then pip check.
# $(call python_is_311,TARGET): the locks are for CPython 3.11, and say so before anything installs.
python_is_311 = @$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and f"make $(1): locks/ are for CPython 3.11, and $(PYTHON) is {sys.version.split()[0]}: PYTHON=python3.11 make $(1)")'
install: $(VENV)/.installed  ## the host venv (CPython 3.11, as locked): Flower, torch, the tests' tools
$(VENV)/.installed: pyproject.toml constraints.txt locks/host.txt
	$(call python_is_311,install)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r locks/host.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Only the flwr CLI, for a machine that submits runs and lists them (docs/deployment.md): no
# torch, no app; the files of locks/cli.txt (Linux x86_64, CPython 3.11), each checked against
# its sha256.
CLI_VENV ?= .venv-cli
cli: $(CLI_VENV)/.installed  ## only the flwr CLI, as locked, in .venv-cli (for a Linux laptop that submits runs)
$(CLI_VENV)/.installed: locks/cli.txt
	$(call python_is_311,cli)
	$(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/pip install --quiet --require-hashes --no-deps -r locks/cli.txt
	$(CLI_VENV)/bin/pip check
	touch $@

images:  ## the SuperLink, SuperNode and ServerApp images (registry-free where need be)
	docker/build-images.sh

# What a person watching sees of a run: its rounds as readable lines (scripts/watch.py) when
# make's output is a terminal; JSON Lines, as the containers print them, when it is not (a
# pipe, a file), under CI, or with WATCH=json; WATCH=text: readable lines always. Either way
# every container's own log stays JSON, and make exits with the run's outcome.
WATCH ?= auto
# $(call run_to_the_end,COMPOSE[,SERVICE]): up, following `submit` alone (Compose 2.2x would
# otherwise end everything when the one-shot `certs` finishes); $$status is the run's outcome.
# SERVICE runs the ServerApp (superlink in the simulations). Ctrl-C is Compose's to act on: the
# reader stays to show it stopping; a reader that fails hands the rest to cat, never losing it.
run_to_the_end = $(1) up --no-build --exit-code-from submit submit | { trap '' INT; \
	if [ "$(WATCH)" = text ] || { [ "$(WATCH)" = auto ] && [ -t 1 ] && [ -z "$$CI" ]; }; \
	then python3 scripts/watch.py --logs "$(1) logs" --serverapp-service $(or $(2),serverapp) || cat; \
	else cat; fi; }; status=$${PIPESTATUS[0]}

federation: images  ## a whole federation in Docker, to the end; exits with the run's outcome
	$(call run_to_the_end,docker compose); docker compose stop; exit $$status

AGGREGATED := docker compose -f docker/compose.aggregator.yaml
federation-aggregated: images  ## the federation with every container's lines stored by the aggregator (kept running)
	$(call run_to_the_end,$(AGGREGATED)); $(AGGREGATED) stop superlink serverapp supernode; exit $$status

report: install  ## table + chart of the last run in the aggregator's store (make federation-aggregated first)
	@# Every run's file, oldest first: the report takes the last run the ServerApp's own lines
	@# tell of (a file a site's lines made, newer or not, holds none of those: scripts/log_provenance.py).
	@runs=$$($(AGGREGATED) exec -T aggregator sh -c 'ls -tr /var/log/flowerdock/runs 2>/dev/null'); \
	if [ -z "$$runs" ]; then echo "no run in the aggregator's store yet: make federation-aggregated first" >&2; exit 2; fi; \
	$(AGGREGATED) exec -T aggregator sh -c 'cd /var/log/flowerdock/runs && cat $$(ls -tr)' | $(BIN)/python scripts/report.py --png report.png

SITES ?= 3
sites: install  ## SITES=3 site folders in ./sites from the bundled digits (Dirichlet: sizes and label mixes differ)
	$(BIN)/python scripts/make_site_data.py --sites $(SITES) --partitioning dirichlet --alpha 0.5 --format npz,csv --out sites --force

# A site's bundle: its compose file, env file and keys (and, IMAGES=1, the SuperNode image), for a
# machine with Docker and no clone: NODE=supernode-3 SUPERLINK=flower.example.org:9092 make site-bundle
# (SITE_DATA=1: the site's own data; GPU=1: the CUDA image; a new NODE gets a key from certs/out/).
site-bundle: install  ## NODE's bundle in ./bundles/NODE (SUPERLINK=host:port; SITE_DATA=1, GPU=1, IMAGES=1)
	@test -n "$(NODE)" -a -n "$(SUPERLINK)" || { echo "make site-bundle: set NODE=supernode-N and SUPERLINK=host:port" >&2; exit 2; }
	$(BIN)/python scripts/site_bundle.py $(NODE) --superlink $(SUPERLINK) $(if $(SITE_DATA),--site-data) \
		$(if $(GPU),--gpu) $(if $(IMAGES),--images) $(if $(PARTITION),--partition $(PARTITION)) \
		$(if $(NUM_PARTITIONS),--num-partitions $(NUM_PARTITIONS))

SITES_COMPOSE := docker compose -f compose.yaml -f docker/compose.sites.yaml
federation-sites: images  ## the federation with SuperNode N on ./sites/site-N (make sites first)
	@test -d sites/site-1 || { echo "no site folders in ./sites: run make sites first" >&2; exit 2; }
	export SITES_DIR=$(CURDIR)/sites NUM_SUPERNODES=$$(ls -d sites/site-* | wc -l); \
	$(call run_to_the_end,$(SITES_COMPOSE)); $(SITES_COMPOSE) stop; exit $$status

simulation-docker: images  ## Flower's simulation runtime in a container: SIM_NODES=1000, SIM_SAMPLED=25, SIM_ROUNDS=3
	$(call run_to_the_end,docker compose -f docker/compose.simulation.yaml,superlink); \
	docker compose -f docker/compose.simulation.yaml stop; exit $$status

# The simulation on a Ray cluster (docs/ray.md): a Ray head, RAY_WORKERS workers, the
# simulation SuperLink joining them; Ray's TLS with a node certificate for every address
# of the compose network RAY_SUBNET, issued here by the operator's CA (certs/out/ca,
# made if missing; its key never enters a container). As root, or through the
# SuperLink image, so that the key file belongs to the containers' uid.
RAY_SUBNET ?= 10.213.47.0/26
CERTS_OUT ?= $(CURDIR)/certs/out
RAY_CERTS_DIR ?= $(CERTS_OUT)/ray
export RAY_SUBNET RAY_CERTS_DIR
MAKE_CERTS = CERTS_OUT=$(CERTS_OUT) $(if $(filter 0,$(shell id -u)),,CERTS_USE_DOCKER=1 )certs/make-certs.sh
ray-certs: images  ## the Ray node certificate for RAY_SUBNET in $CERTS_OUT/ray (kept if there)
	@test -f $(CERTS_OUT)/ca/ca.crt || $(MAKE_CERTS) init --nodes 0
	@test -f $(RAY_CERTS_DIR)/ray.crt || $(MAKE_CERTS) ray $(notdir $(RAY_CERTS_DIR)) --subnet $(RAY_SUBNET)

RAY_COMPOSE := docker compose -f docker/compose.ray.yaml
simulation-ray: images ray-certs  ## the simulation on a Ray cluster: RAY_WORKERS=2, SIM_NODES=1000, SIM_SAMPLED=25, SIM_ROUNDS=3
	$(call run_to_the_end,$(RAY_COMPOSE),superlink); $(RAY_COMPOSE) stop; exit $$status

test: install  ## every test, the Docker end-to-end ones included
	$(BIN)/python -m pytest -v -rA --durations=15

test-fast: install  ## unit tests only (no simulation, no Docker, no download)
	$(BIN)/python -m pytest -q -m "not simulation and not docker and not network"

# The same fast tests, then `make simulation`, on Flower's next release: a venv of its own,
# .venv-flower-next, with .venv's packages but flwr-nightly for flwr (scripts/flower_next/;
# docs/flower-upgrades.md#trying-flowers-next-release).
flower-next: install  ## the fast tests and make simulation against Flower's newest pre-release (FLOWER_NEXT=version pins one)
	$(BIN)/python -m scripts.flower_next

# Flower's simulation runtime on this machine: 10 virtual SuperNodes, one CPU per
# ClientApp (two at once on 2 cores); Ray's log forwarding off, as it would prefix
# ClientApp lines with "(pid=...)" and break JSON Lines.
# Half of them asked each round (a deployment's default is every site; RUN_CONFIG overrides;
# a RUN_CONFIG that is a .toml file stands alone, as Flower wants it).
SIM_FEDERATION_CONFIG ?= num-supernodes=10 client-resources-num-cpus=1 init-args-log-to-driver=false
SIM_RUN_CONFIG := fraction-train=0.5 fraction-evaluate=0.5
simulation: install  ## `flwr run .` in Flower's simulation runtime: 10 virtual SuperNodes, 5 a round (RUN_CONFIG="...")
	$(BIN)/python scripts/local_superlink.py check
	$(BIN)/flwr run . --stream --federation-config "$(SIM_FEDERATION_CONFIG)" \
		$(if $(filter %.toml,$(RUN_CONFIG)),,--run-config '$(SIM_RUN_CONFIG)') $(if $(RUN_CONFIG),--run-config '$(RUN_CONFIG)')

simulation-stop: install  ## end this checkout's local SuperLink (`flwr run` leaves it running), and no other
	$(BIN)/python scripts/local_superlink.py stop

# Each benchmark's output is also kept, with when and where, in docs/figures/<target>.md.
RECORD = $(BIN)/python scripts/record_figures.py $@ --
bench: install  ## codec vs pickle, hostile payloads, the strategy's cost per reply
	$(RECORD) env LOG_FORMAT=off $(BIN)/python scripts/bench_metadata.py

bench-round: install images  ## round time in Docker vs plain processes vs Flower's floor, and where it goes
	$(RECORD) $(BIN)/python scripts/bench_round.py

bench-model-size: install images  ## round time, bytes on the wire, peak memory for 1, 10, 100 MiB more model
	$(RECORD) $(BIN)/python scripts/bench_model_size.py

bench-simulation: install images  ## the same simulation in a container and on the host
	$(RECORD) $(BIN)/python scripts/bench_simulation.py

bench-faults: install images  ## a lost node's cost (compose), accuracy under attack per aggregator (simulation)
	$(RECORD) $(BIN)/python scripts/bench_faults.py

bench-ray: install images  ## the simulation on 1, 2, 4 Ray workers vs one container, 1,000 and 10,000 nodes
	$(RECORD) $(BIN)/python scripts/bench_ray.py

bench-superlink: install images  ## one SuperLink, N fake SuperNodes through the gateway (TLS, keys): 50 to 1000, with a plot
	$(RECORD) $(BIN)/python scripts/bench_superlink.py --plot docs/figures/bench-superlink.png $(ARGS)

bench-gateway: install images  ## a federation run under flood: round time and memory, quiet vs attacked
	$(RECORD) $(BIN)/python scripts/bench_gateway.py

bench-commands: install images  ## the README's commands, timed from a fresh shell
	$(RECORD) $(BIN)/python scripts/bench_commands.py

# Every version constraints.txt pins is kept, and what a change to pyproject.toml brings in (a
# dependency you added, and its own) is pinned anew; UPGRADE=1 re-pins everything to the newest
# that pyproject.toml allows.
KEEP_PINS = $(if $(filter 1,$(UPGRADE)),,-c constraints.txt)
constraints:  ## pin what a change to pyproject.toml brings in, keeping every other pin (UPGRADE=1: re-pin all, e.g. a raised pin); then make lock
	rm -rf build/pin && $(PYTHON) -m venv build/pin && build/pin/bin/pip install --quiet --upgrade pip setuptools $(KEEP_PINS)
	build/pin/bin/pip install --quiet hatchling editables -e ".[simulation,dev,report]" $(KEEP_PINS)
	{ sed -n '1,2p' constraints.txt; build/pin/bin/pip freeze --all --exclude-editable; } > constraints.new && mv constraints.new constraints.txt

lock:  ## locks/: every file the venv and the images install, by version and sha256 (docs/building.md)
	$(PYTHON) scripts/lock.py

# Every federation the targets above start from this checkout, each with every profile
# (`submit` is in the `run` profile, and a plain `down` leaves it): containers, networks
# and volumes (certificates, SuperLink state, the aggregator's stored lines).
FEDERATIONS := "compose.yaml" "compose.yaml docker/compose.sites.yaml" "docker/compose.aggregator.yaml" \
	"docker/compose.simulation.yaml" "docker/compose.ray.yaml"
down:  ## take down every federation started here, to the last container and volume (certificates included)
	@for files in $(FEDERATIONS); do \
		SITES_DIR=/nonexistent docker compose $$(printf -- '-f %s ' $$files) --profile '*' \
			down --volumes --remove-orphans --timeout 5 || exit 1; \
	done

print-version:  # the images' tag (for scripts)
	@echo $(FLOWERDOCK_VERSION)

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | \
		awk -F'\t' '{ printf "  %-22s %s\n", $$1, $$2 }'

clean:  ## remove the venv, built wheels and local outputs (not images, not containers: make down)
	rm -rf $(VENV) .venv-cli .venv-flower-next build .flwr/apps .flwr/local-superlink outputs
