# Local set-up, server and tests. `make serve` and `make test` each set up the venv first.
#
# Deploying to Modal, from zero to a URL (docs/modal.md explains every step and setting):
#   make bucket  BUCKET=my-sdgate-images [REGION=us-east-1 | ENDPOINT=https://<id>.r2.cloudflarestorage.com]
#   make secrets BUCKET=my-sdgate-images [same options]     (with AWS_* and SDGATE_API_KEYS exported)
#   make weights WEIGHTS="--model stable-diffusion-v1-5/stable-diffusion-v1-5"
#   make deploy  [DEFAULT_MODEL=stable-diffusion-v1-5]      (SDGATE_GPU=... etc. from the environment)
VENV ?= .venv
PY := $(VENV)/bin/python
MODAL := $(VENV)/bin/modal
# torch 2.14.1 + torchvision 0.29.1: the pair that lies on this machine's disk and imports together
# (spandrel needs torchvision; the CPU-only torch 2.13.0 has no torchvision that loads beside it).
# It runs on the CPU here; the Modal image pins its own build (functions/app.py).
TORCH ?= torch==2.14.1 torchvision==0.29.1

BUCKET ?=
REGION ?=
ENDPOINT ?=
PREFIX ?= sdgate/
EXPIRE_DAYS ?= 30
ACCESS ?= --private
PUBLIC_URL ?=
WEIGHTS ?=
DEFAULT_MODEL ?=

.PHONY: setup serve test need-bucket bucket secrets weights deploy
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: setup
	$(VENV)/bin/sdgate serve

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

need-bucket:
	@test -n "$(BUCKET)" || { echo "set BUCKET=<bucket name>"; exit 2; }

# Create the output bucket if missing; expiry, CORS and access as asked. Safe to re-run.
bucket: setup need-bucket
	$(PY) -m infra.bucket --bucket $(BUCKET) --prefix $(PREFIX) --expire-days $(EXPIRE_DAYS) \
		$(if $(REGION),--region $(REGION)) $(if $(ENDPOINT),--endpoint-url $(ENDPOINT)) $(ACCESS)

# The two Modal secrets, from this shell's AWS_* variables and SDGATE_API_KEYS (overwritten).
secrets: setup need-bucket
	@test -n "$$AWS_ACCESS_KEY_ID" -a -n "$$AWS_SECRET_ACCESS_KEY" || \
		{ echo "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY first"; exit 2; }
	@test -n "$$SDGATE_API_KEYS" -o "$$SDGATE_ALLOW_OPEN" = 1 || \
		{ echo "set SDGATE_API_KEYS=k1,k2 (or SDGATE_ALLOW_OPEN=1 to serve anyone)"; exit 2; }
	$(MODAL) secret create --force sdgate-s3 \
		AWS_ACCESS_KEY_ID="$$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$$AWS_SECRET_ACCESS_KEY" \
		SDGATE_S3_BUCKET=$(BUCKET) SDGATE_S3_PREFIX=$(PREFIX) \
		$(if $(REGION),SDGATE_S3_REGION=$(REGION)) $(if $(ENDPOINT),SDGATE_S3_ENDPOINT_URL=$(ENDPOINT)) \
		$(if $(PUBLIC_URL),SDGATE_S3_PUBLIC_URL=$(PUBLIC_URL))
	$(MODAL) secret create --force sdgate-api \
		SDGATE_API_KEYS="$$SDGATE_API_KEYS" SDGATE_ALLOW_OPEN="$${SDGATE_ALLOW_OPEN:-0}" \
		$(if $(SDGATE_WEBHOOK_SECRET),SDGATE_WEBHOOK_SECRET="$$SDGATE_WEBHOOK_SECRET")

# Fill the weights volume (runs on Modal; re-runs fetch only what is missing).
weights: setup
	@test -n '$(WEIGHTS)' || { echo 'set WEIGHTS="--model OWNER/REPO [--lora NAME=URL ...]"'; exit 2; }
	$(MODAL) run -m functions.weights $(WEIGHTS)

# Deploy the GPU class and the web endpoint; Modal prints https://<workspace>--sdgate-web.modal.run
deploy: setup
	$(if $(DEFAULT_MODEL),SDGATE_DEFAULT_MODEL=$(DEFAULT_MODEL)) $(MODAL) deploy -m functions.web
