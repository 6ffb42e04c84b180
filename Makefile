# Two entry points for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: install demo test check browser services clean-demo

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Run the app on embedded defaults (SQLite + filesystem broker under var/): a worker per queue, the toy world's
## two trained pipelines generating on the gpu one, rounds of every kind, then the web server on :8000.
demo: install
	$(BIN)/python manage.py migrate -v0
	$(BIN)/python manage.py import_prompts --preset partiprompts
	$(BIN)/python manage.py import_prompts --preset dsg1k
	$(BIN)/python manage.py create_demo_accounts
	BIN=$(BIN) scripts/demo.sh

## Install everything and run the whole suite against PostgreSQL and Redis (started if down).
test: install browser services check
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} \
	$(BIN)/python -m pytest --no-skips $(PYTEST_ARGS)

check: install
	$(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_ENV=production SECRET_KEY=ci-only-$$(date +%s)-secret-key-with-enough-length-and-entropy-x9Z ALLOWED_HOSTS=example.org \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

browser:
	@scripts/ensure_chromium.sh

services:
	@scripts/services.sh

clean-demo:
	rm -rf var/
