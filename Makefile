# anymate-gateway: build, test and run.
#
# Out-of-tree build into $(BUILD) (default build/). Every source in gateway/ except main.c goes
# into $(BUILD)/libgateway.a, which the binary, the unit tests and the fuzz targets link; a new
# module or a new tests/unit/test_<module>.c is picked up without editing this file.
#
#   make            build/anymate-gateway and build/anymate-mock
#   make run        mock Anymate + gateway in front of it (config/dev.conf)
#   make test       install missing Debian packages, build, unit + end-to-end tests
#   make asan       the whole test suite under AddressSanitizer + UBSan (build-asan/)
#   make fuzz       libFuzzer targets for FUZZ_SECONDS each (build-fuzz/, clang)
#   make deps       install the Debian packages the project needs (idempotent)
#   make format / format-check / clean

BUILD        ?= build
CC           ?= cc
PYTHON       ?= /usr/bin/python3
FUZZ_SECONDS ?= 30
SAN          ?=
# CI sets CI=true: warnings are errors there; locally too with WERROR=1.
WERROR       ?= $(if $(CI),1,)

PKGS      := libevent_core libevent_extra libevent_openssl libevent_pthreads openssl jansson libpq inih
TEST_PKGS := cmocka
DEB_PKGS  := build-essential pkg-config libevent-dev libssl-dev libjansson-dev libpq-dev \
             libcmocka-dev libinih-dev postgresql python3 openssl curl clang clang-format
SUDO      := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

WARN   := -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
          -Wno-unused-parameter -Wno-format-zero-length $(if $(WERROR),-Werror,)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANFL  := $(if $(SAN),$(SANFLAGS))
# Recursive (=) so that pkg-config runs only when a compile needs it, after `make deps`.
CFLAGS  = -std=c11 -D_GNU_SOURCE -O2 -g $(WARN) $(SANFL) -Igateway \
          $(shell pkg-config --cflags $(PKGS)) $(EXTRA_CFLAGS)
LDLIBS  = $(shell pkg-config --libs $(PKGS)) -lpthread
TLIBS   = $(shell pkg-config --libs $(TEST_PKGS))

GW_SRCS   := $(wildcard gateway/*.c)
LIB_SRCS  := $(filter-out gateway/main.c,$(GW_SRCS))
MOCK_SRCS := $(wildcard tests/mock/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
MOCK_OBJS := $(MOCK_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all test unit integration run asan fuzz deps format format-check clean check-tools
.DEFAULT_GOAL := all

all: $(BUILD)/anymate-gateway $(BUILD)/anymate-mock $(UNIT_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libgateway.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/anymate-gateway: $(BUILD)/obj/gateway/main.o $(BUILD)/libgateway.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/anymate-mock: $(MOCK_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libgateway.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(BUILD)/libgateway.a $(LDLIBS) $(TLIBS)

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)

# The README's test command. Installs what is missing first, so it works on a fresh machine.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit integration

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

integration: $(BUILD)/anymate-gateway $(BUILD)/anymate-mock
	$(PYTHON) tests/integration/run.py --build $(BUILD)

run: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/tools/devrun.py --build $(BUILD) --config config/dev.conf

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 test

# libFuzzer targets: clang, ASan + UBSan, each run for FUZZ_SECONDS on a corpus under build-fuzz/.
FUZZ_CFLAGS = -fsanitize=fuzzer-no-link,address,undefined
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang EXTRA_CFLAGS="$(FUZZ_CFLAGS)" \
	    build-fuzz/libgateway.a $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/fuzz/%)
	@for f in $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/fuzz/%); do \
	    mkdir -p $$f.corpus; seeds=tests/fuzz/corpus/$$(basename $$f); \
	    echo "== $$f for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $$f.corpus $$( [ -d $$seeds ] && echo $$seeds ) \
	        2>&1 | tail -n 3 || exit 1; done

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/libgateway.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(BUILD)/libgateway.a $(LDLIBS)

deps:
	@missing=$$(for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

FORMAT_FILES = $(wildcard gateway/*.[ch] tests/unit/*.[ch] tests/mock/*.[ch] tests/fuzz/*.[ch])
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-asan build-fuzz
