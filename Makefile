# SPDX-License-Identifier: Apache-2.0
# Common tasks. `make demo` runs the main job, `make test` runs every test (installing what is missing).

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RTL_SRCS := rtl/rnic_reg_pkg.sv rtl/rnic_pkg.sv $(filter-out rtl/rnic_reg_pkg.sv rtl/rnic_pkg.sv,$(wildcard rtl/*.sv))
WAIVER := $(wildcard rtl/lint/verilator_waiver.vlt)

.PHONY: all deps regs check-regs lint build test demo rtl-unit waves examples interop bench bench-sim

all: build

## deps: install Verilator and tshark from Debian if they are missing
deps:
	@missing=""; \
	command -v verilator >/dev/null || missing="$$missing verilator"; \
	command -v tshark >/dev/null || missing="$$missing tshark"; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	[ -f /usr/include/zlib.h ] || missing="$$missing zlib1g-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## regs: regenerate rtl/rnic_reg_pkg.sv, regs/src/generated.rs, docs/register-map.md from spec/rnic.toml
regs:
	python3 spec/gen.py

## check-regs: fail if the generated files are stale
check-regs:
	python3 spec/gen.py --check

## lint: verilator -Wall on the whole RTL, for the default build and with 16 and 64 VFs
lint:
	verilator --lint-only -Wall $(WAIVER) $(RTL_SRCS) --top-module rnic_top
	verilator --lint-only -Wall $(WAIVER) $(RTL_SRCS) --top-module rnic_top -GNumVf=16
	verilator --lint-only -Wall $(WAIVER) $(RTL_SRCS) --top-module rnic_top -GNumVf=64

build:
	$(CARGO) build --release

## rtl-unit: module-level Verilator testbenches (framers) and the C++ smoke test of the core, built
## with 8 (default), 16 and 64 VFs
rtl-unit:
	rtl/tb/run.sh
	$(MAKE) -C rtl/tb_core run
	$(MAKE) -C rtl/tb_core run NUMVF=16
	$(MAKE) -C rtl/tb_core run NUMVF=64

## test: everything a fresh clone needs to pass
test: deps check-regs lint rtl-unit
	$(CARGO) test --release --workspace
	$(MAKE) examples

## demo: two NICs, every verb, RTL and model in lockstep
demo: deps
	$(CARGO) run --release -p rnic-testbench --bin rnic-demo

## waves: every verb in lockstep with an FST waveform and a pcap (ARGS="--out x.fst --start 0 --end 20000")
waves: deps
	$(CARGO) run --release -p rnic-testbench --bin rnic-waves -- $(ARGS)

## examples: the driver developers' examples (ping-pong, key-value GET over RDMA READ) in lockstep and on the model
examples: deps
	$(CARGO) run --release -q -p rnic-testbench --example pingpong -- --backend lockstep --iters 20 --size 1000
	$(CARGO) run --release -q -p rnic-testbench --example pingpong -- --backend model --iters 20
	$(CARGO) run --release -q -p rnic-testbench --example kv_get -- --backend lockstep
	$(CARGO) run --release -q -p rnic-testbench --example kv_get -- --backend model

## interop: the Linux kernel's rxe and the unmodified ibv_rc_pingpong / perftest in a QEMU guest
## (built with debootstrap, cached in target/interop) against a simulated NIC on each backend
## (INTEROP_BACKENDS=model,rtl,lockstep; INTEROP_ARGS="--sizes 2,4096 --iters 20"); docs/interop.md
interop: deps
	@CARGO="$(CARGO)" bash interop/run.sh

## bench: perftest sweep (write/read/send bw and lat, 2 B..8 MiB) on the RTL in modelled time;
## writes target/bench/results.json and target/bench/results.svg (ARGS="--backend lockstep --qps 2 ...")
bench: deps
	$(CARGO) run --release -q -p rnic-testbench --bin rnic-bench -- --json target/bench/results.json --plot target/bench/results.svg $(ARGS)

## bench-sim: simulation speed (bare Verilated eval, harness, lockstep, model); writes target/bench/simspeed.json
bench-sim: deps
	$(CARGO) run --release -q -p rnic-testbench --bin rnic-bench -- --sim-speed --json target/bench/simspeed.json $(ARGS)
