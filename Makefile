# ngx_http_deepseek_metrics_module - build and test entry points.
#
#   make deps        install apt + npm dependencies (scripts/deps.sh; idempotent)
#   make build       dynamic module for Debian's nginx -> build/modules/ngx_http_deepseek_metrics_module.so
#   make build-clang the same with clang (-Werror under both compilers)
#                    -> build/modules/nginx-dev-clang/ (the gcc .so stays)
#   make asan        clang ASan+UBSan nginx 1.22.1 with the module static -> build/asan/sbin/nginx
#   make test        deps + build + asan, then the whole suite twice: Debian nginx + .so,
#                    and the ASan nginx (static). Fails if either run fails.
#   make test-dynamic / test-asan   one of the two runs (builds what it needs)
#   make mutants     scripts/mutants.sh: plant each defect of mutants/*.mut, rebuild, run its
#                    tests; prints killed/total, fails unless every mutant is killed
#                    (MUTANTS=id1,id2 to pick some; MUTANT_FILES=...; docs/testing.md)
#   make deb         scripts/deb.sh: Debian package for Debian's nginx (dpkg-buildpackage,
#                    dh-sequence-nginx) -> build/deb/libnginx-mod-http-deepseek-metrics_<ver>_<arch>.deb
#   make demo        scripts/demo.sh          make bench   bench/run.sh
#   make clean       remove module build trees (keeps the fetched nginx source); distclean: all of build/
#
# Variables: TESTS (default: every *.t under t/, node_modules excluded), PROVE_JOBS (2),
# PROVE_ARGS (extra prove flags, e.g. PROVE_ARGS=-v).

SHELL      := /bin/bash
REPO       := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PROVE_JOBS ?= 2
PROVE_ARGS ?=
TESTS      ?= $(shell find t -name '*.t' -not -path '*/node_modules/*' | sort)
SO         := $(REPO)/build/modules/ngx_http_deepseek_metrics_module.so
ASAN_NGINX := $(REPO)/build/asan/sbin/nginx
PROVE      := prove -I t/lib -j$(PROVE_JOBS) --timer $(PROVE_ARGS)

.PHONY: all deps build build-clang asan test check test-dynamic test-asan \
        run-dynamic run-asan mutants deb demo bench clean distclean

all: build

deps:
	scripts/deps.sh

build:
	scripts/build.sh

build-clang:
	CC=clang scripts/build.sh

asan:
	scripts/build-asan.sh

# the whole suite against both nginx binaries; both run even if the first fails
test: deps build asan
	@rc=0; \
	$(MAKE) --no-print-directory run-dynamic || rc=1; \
	$(MAKE) --no-print-directory run-asan || rc=1; \
	if [ $$rc = 0 ]; then echo "make test: dynamic + ASan suites passed"; \
	else echo "make test: FAILED (see above)"; fi; \
	exit $$rc

check: test

test-dynamic: build
	$(MAKE) --no-print-directory run-dynamic

test-asan: asan
	$(MAKE) --no-print-directory run-asan

run-dynamic:
	@echo "== test suite: /usr/sbin/nginx + $(SO)"
	DSM_NGINX=/usr/sbin/nginx DSM_MODULE=$(SO) $(PROVE) $(TESTS)

run-asan:
	@echo "== test suite: $(ASAN_NGINX) (ASan+UBSan, module static)"
	DSM_NGINX=$(ASAN_NGINX) DSM_MODULE= $(PROVE) $(TESTS)

# needs no prior build: the runner builds its own scratch copy (build/mutants)
mutants:
	scripts/mutants.sh

# builds its own copy with Debian's flags in build/deb (needs no prior build)
deb:
	scripts/deb.sh

demo:
	scripts/demo.sh

bench:
	bench/run.sh

clean:
	rm -rf build/nginx-dev build/nginx-dev-* build/modules build/asan build/asan-* build/mutants build/deb

distclean:
	rm -rf build
