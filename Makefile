# Sai Resource Manager.  Deno comes from PATH, else it is installed from npm
# into .tools/ (ignored by git) so a fresh clone builds with nothing but npm.
DENO_VERSION := 2.9.6
TOOLS := $(CURDIR)/.tools
LOCAL_DENO := $(TOOLS)/bin/deno
DENO ?= $(shell command -v deno 2>/dev/null || echo $(LOCAL_DENO))

# Passed through to `deno compile`, which otherwise downloads denort.  An
# empty DENORT_BIN would make deno look for denort at '', so only when set.
ifneq ($(strip $(DENORT_BIN)),)
export DENORT_BIN
endif

# No colour codes when the output goes to a file or a pipe (a CI log):
# deno colours its output unless NO_COLOR is set.
PLAIN := [ -t 1 ] || export NO_COLOR=1;

DIST := dist
SOURCES := $(wildcard *.ts src/*/*.ts) src/server/_web_asset.ts deno.json
WEB_SOURCES := $(wildcard web/*) src/shared/format.ts scripts/build_web.ts

.PHONY: all build test run ok check fmt lint clean deno web test-tools install uninstall

all: build

deno: $(DENO)

$(LOCAL_DENO):
	@echo "deno not on PATH: installing deno@$(DENO_VERSION) from npm into $(TOOLS)"
	mkdir -p $(TOOLS)/bin
	cd $(TOOLS) && npm install --no-save --no-audit --no-fund --prefix . deno@$(DENO_VERSION)
	@bin=$$(ls $(TOOLS)/node_modules/@deno/*/deno 2>/dev/null | head -1); \
	  [ -n "$$bin" ] || bin=$(TOOLS)/node_modules/deno/deno; \
	  ln -sf "$$bin" $(LOCAL_DENO)
	$(LOCAL_DENO) --version

# The status page, bundled by esbuild into a module the server imports.  The
# script rebuilds only when the hash of web/ differs from the recorded one;
# the touch keeps make from asking again when only mtimes moved.
src/server/_web_asset.ts: $(WEB_SOURCES) | $(DENO)
	$(PLAIN) $(DENO) task web
	touch $@

web: src/server/_web_asset.ts

build: $(DIST)/sai-server $(DIST)/sai-builder $(DIST)/sai-resource

# Each binary gets only the permissions it needs, as listed in
# src/shared/permissions.ts: the tests run each program with the same list.
# The script prints the `deno compile` line it runs, and says what to do when
# deno cannot download its runtime (denort) rather than a Rust backtrace.
COMPILE := $(DENO) run --quiet --no-prompt --allow-read --allow-write --allow-env --allow-run scripts/compile.ts

$(DIST)/sai-server $(DIST)/sai-builder $(DIST)/sai-resource: $(SOURCES) scripts/compile.ts | $(DENO)
	@$(COMPILE) $@

# Tests drive Debian programs: Chromium (the status page; CHROMIUM=/path
# points the test at another) and libfaketime (wall-clock steps on a
# builder).  Whatever is missing is installed in one go (as root, or through
# sudo); a test whose program is still missing skips, saying why.
TEST_PACKAGES := chromium:/usr/bin/chromium \
  faketime:/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1

test-tools:
	@missing=; for p in $(TEST_PACKAGES); do \
	  pkg=$${p%%:*}; file=$${p#*:}; \
	  [ "$$pkg" = chromium ] && { command -v chromium >/dev/null || [ -n "$$CHROMIUM" ]; } && continue; \
	  [ -e "$$file" ] || missing="$$missing $$pkg"; \
	done; \
	[ -z "$$missing" ] || { \
	  echo "make: installing Debian's$$missing for the tests"; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  { $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; } || \
	  echo "make: could not install$$missing; the tests that need them will fail or skip"; }

test: test-tools | $(DENO)
	$(PLAIN) $(DENO) task test

ok: | $(DENO)
	$(PLAIN) $(DENO) task ok

check: | $(DENO)
	$(PLAIN) $(DENO) task check

run: | $(DENO)
	$(DENO) run --allow-all scripts/run_local.ts

# `make build`, then (as root) `make install`: the three binaries, the
# systemd units (their paths rewritten for PREFIX) and the docs they point
# to.  DESTDIR stages it all under another root (a package), as usual.
# systemd reads units from /usr/local/lib/systemd/system as well as /etc.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/sai-resource
BINARIES := $(DIST)/sai-server $(DIST)/sai-builder $(DIST)/sai-resource
UNITS := deploy/systemd/sai-server.service deploy/systemd/sai-builder.service
DOCS := docs/deploy.md docs/operations.md docs/reliability.md docs/ctest.md

# Never builds: as root it would run deno as root, and a binary built
# elsewhere (no denort here) is as good.  Say what is missing instead.
install:
	@for b in $(BINARIES); do [ -x "$$b" ] || { \
	  echo "make install: $$b is missing: run 'make build' first (or DIST=DIR with the built binaries)" >&2; \
	  exit 1; }; done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/examples
	install -m 0755 $(BINARIES) $(DESTDIR)$(BINDIR)/
	@for u in $(UNITS); do \
	  echo "install -m 0644 $$u $(DESTDIR)$(UNITDIR)/ (paths for PREFIX=$(PREFIX))"; \
	  sed -e 's|/usr/local/bin/|$(BINDIR)/|g' \
	      -e 's|/usr/local/share/doc/sai-resource|$(DOCDIR)|g' \
	      $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/sai-server.conf.json $(DESTDIR)$(DOCDIR)/examples/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(BINARIES)))
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS)))
	rm -rf $(DESTDIR)$(DOCDIR)

clean:
	rm -rf $(DIST)
