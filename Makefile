# pg_fleet — PGXS build.
#
#   make            build the extension (and the tools, later)
#   make install    install into the PostgreSQL that pg_config names
#   make installcheck   pg_regress, isolation and TAP suites, each on a
#                   temporary server preloading pg_cron and pg_fleet
#   make test       everything from a fresh Debian machine: packages, build,
#                   install, then installcheck as the postgres OS user
#   make demo       the same set-up, then an end-to-end demo on a throwaway server
#   make bench      benchmarks, each figure a ratio against raw PostgreSQL

EXTENSION = pg_fleet
# The version lives in the control file alone.
EXTVERSION := $(shell sed -n "s/^default_version = '\([^']*\)'.*/\1/p" $(EXTENSION).control)
# Versions users update from: each has its install script frozen in
# src/sql/versions/ (for the upgrade suite) and its migration in
# src/sql/updates/.  Add the version just released here.
UPDATE_FROM = 0.1 0.2 0.3 0.4 0.5 0.6 0.7

MODULE_big = pg_fleet
OBJS = \
	src/pg_fleet.o \
	src/device_keys.o \
	src/device_import.o \
	src/device_identity.o \
	src/device_register.o \
	src/engine_shared.o \
	src/launcher.o \
	src/engine.o \
	src/utility_hook.o \
	src/row_scope.o \
	src/reference_write_order.o \
	src/citus_node.o \
	src/import_tracking.o \
	src/cron_bridge.o \
	src/spreadsheet_cell.o \
	src/closest_name.o \
	src/x509_certificates.o

SHLIB_LINK += -lcrypto

# What holds data: created by the install script, changed afterwards only
# by the migrations in src/sql/updates/.
CATALOG_SOURCES = \
	src/sql/catalog/schemas.sql \
	src/sql/catalog/organizations.sql \
	src/sql/catalog/device_templates.sql \
	src/sql/catalog/edge_manifests.sql \
	src/sql/catalog/devices.sql \
	src/sql/catalog/device_groups.sql \
	src/sql/catalog/enrollment_groups.sql \
	src/sql/catalog/device_operations.sql \
	src/sql/catalog/jobs.sql \
	src/sql/catalog/commands.sql \
	src/sql/catalog/schedules.sql \
	src/sql/catalog/engine.sql \
	src/sql/catalog/device_endpoint.sql \
	src/sql/catalog/dump.sql

# The code, one topic per file, in this order: every update script reloads
# all of it (tools/build-sql.sh).
CODE_SOURCES = \
	src/sql/schema.sql \
	src/sql/access.sql \
	src/sql/organizations.sql \
	src/sql/device_templates.sql \
	src/sql/edge_manifests.sql \
	src/sql/devices.sql \
	src/sql/device_group_queries.sql \
	src/sql/device_groups.sql \
	src/sql/enrollment_groups.sql \
	src/sql/enrollment_group_certificates.sql \
	src/sql/device_keys.sql \
	src/sql/device_import.sql \
	src/sql/device_export.sql \
	src/sql/schema_values.sql \
	src/sql/job_definitions.sql \
	src/sql/job_rollouts.sql \
	src/sql/jobs.sql \
	src/sql/job_results.sql \
	src/sql/command_claims.sql \
	src/sql/job_batches.sql \
	src/sql/job_steps.sql \
	src/sql/command_windows.sql \
	src/sql/device_endpoint.sql \
	src/sql/engine.sql \
	src/sql/retention.sql \
	src/sql/schedule_calendar.sql \
	src/sql/scheduled_jobs.sql \
	src/sql/schedule_cron.sql \
	src/sql/reporting.sql \
	src/sql/engine_status.sql \
	src/sql/distribution.sql \
	src/sql/privileges.sql

UPDATE_SCRIPTS = $(foreach v,$(UPDATE_FROM),$(EXTENSION)--$(v)--$(EXTVERSION).sql)
DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(UPDATE_SCRIPTS)
DATA = $(wildcard src/sql/versions/$(EXTENSION)--*.sql)
PG_CPPFLAGS += -DPG_FLEET_VERSION='"$(EXTVERSION)"'

REGRESS = setup layout keys organizations templates manifests devices groups import export jobs_validation jobs_run jobs_control schedules reporting access_control engine iotcentral enrollment_groups device_endpoint rollouts
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=test/fleet.conf

ISOLATION = concurrent_import concurrent_claims stop_at_batch_boundary completion_vs_timeout claim_vs_stop \
	step_vs_lock device_recreated_mid_chunk schedule_vs_rollback rotation_vs_held_job enrollment_group_delete_vs_name \
	job_events continuous_join
ISOLATION_OPTS = --temp-instance=tmp_check_iso --temp-config=test/fleet_isolation.conf \
	--inputdir=test --outputdir=test

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso test/output_iso test/results \
	test/regression.diffs test/regression.out

# PostgreSQL 15's pg_config: Debian's /usr/bin/pg_config picks the newest
# installed version, which may not be 15.
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else ifeq ($(filter test test-citus demo bench bench-citus deps,$(MAKECMDGOALS)),)
$(error PostgreSQL 15 server development files not found: run "make deps" as root, or sudo apt-get install postgresql-server-dev-15)
endif

$(EXTENSION)--$(EXTVERSION).sql: $(CATALOG_SOURCES) $(CODE_SOURCES) tools/build-sql.sh
	tools/build-sql.sh install $(EXTVERSION) $(CATALOG_SOURCES) -- $(CODE_SOURCES) > $@

$(UPDATE_SCRIPTS): $(EXTENSION)--%--$(EXTVERSION).sql: $(CODE_SOURCES) $(wildcard src/sql/updates/*.sql) tools/build-sql.sh
	tools/build-sql.sh update $* $(EXTVERSION) $(CODE_SOURCES) > $@

# The tools, libpq clients built by their own PGXS makefiles: the device
# simulator (tools/fleet-sim/), the command-line client (tools/fleetctl/)
# and the MQTT endpoint's bridge (tools/fleet-bridge/); and the endpoint's
# mosquitto plugin (tools/fleet-mqtt/, a plain makefile: it is not a
# PostgreSQL module), which stays in the tree for tools/mqtt/endpoint.sh.
# PGXS installs them beside psql, in PostgreSQL's bindir, which Debian does
# not put on PATH: they are linked into TOOLS_LINK_DIR too, so that typing
# their names works ("make install TOOLS_LINK_DIR=" links nothing).
TOOL_DIRS = tools/fleet-sim tools/fleetctl tools/fleet-bridge
TOOLS_LINK_DIR ?= /usr/local/bin

all: tools
.PHONY: tools install-tools clean-tools
tools:
	$(foreach d,$(TOOL_DIRS),$(MAKE) -C $(d) PG_CONFIG=$(PG_CONFIG) &&) true
	$(MAKE) -C tools/fleet-mqtt
	$(MAKE) -C tools/fleet-mqtt-load

install: install-tools
install-tools: tools
	$(foreach d,$(TOOL_DIRS),$(MAKE) -C $(d) PG_CONFIG=$(PG_CONFIG) install &&) true
ifneq ($(TOOLS_LINK_DIR),)
	@if $(MKDIR_P) '$(DESTDIR)$(TOOLS_LINK_DIR)' 2>/dev/null && \
	    ln -sf '$(bindir)/fleet-sim' '$(DESTDIR)$(TOOLS_LINK_DIR)/fleet-sim' && \
	    ln -sf '$(bindir)/fleetctl' '$(DESTDIR)$(TOOLS_LINK_DIR)/fleetctl' && \
	    ln -sf '$(bindir)/fleet-bridge' '$(DESTDIR)$(TOOLS_LINK_DIR)/fleet-bridge'; then \
	    echo "fleetctl, fleet-sim and fleet-bridge linked into $(DESTDIR)$(TOOLS_LINK_DIR)"; \
	else \
	    echo "note: cannot link fleetctl, fleet-sim and fleet-bridge into $(DESTDIR)$(TOOLS_LINK_DIR); they are in $(bindir)" >&2; \
	fi
endif

clean: clean-tools
clean-tools:
	$(foreach d,$(TOOL_DIRS),$(MAKE) -C $(d) PG_CONFIG=$(PG_CONFIG) clean &&) true
	$(MAKE) -C tools/fleet-mqtt clean
	$(MAKE) -C tools/fleet-mqtt-load clean

.PHONY: test demo bench bench-citus deps
deps:
	tools/ensure-deps.sh

test:
	tools/run-tests.sh

demo:
	tools/demo.sh

bench:
	tools/bench.sh

bench-citus:
	tools/bench-citus.sh

# One suite at a time, for make test's report.
.PHONY: check-regress check-isolation check-tap
check-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)

check-isolation:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)

check-tap:
	$(prove_installcheck)

# The Citus suite (test/citus/): three nodes on this machine; only where
# the citus extension is installed ("make test" says when it skips it).
.PHONY: check-citus test-citus
check-citus:
	$(MAKE) check-tap PROVE_TESTS='test/citus/t/*.pl'

test-citus:
	tools/run-tests.sh citus
