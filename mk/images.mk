# Container images; included by the top-level Makefile (`-include mk/*.mk`).
#
#   make images           both images with podman (no daemon), on a Debian base made with
#                         mmdebstrap, cached by content hash (tools/images.py)
#   make image-operator   operator/Dockerfile      -> $(OPERATOR_IMAGE)  (podman or docker build)
#   make image-runtime    trainer_image/Dockerfile -> $(RUNTIME_IMAGE)
#   make kind-up          a kind cluster from kind-config.yaml, images loaded, chart installed
#
# The names match charts/modelops/values.yaml (image, workloadImage) and kind-config.yaml;
# tests/unit/test_packaging_names.py checks that they stay in step.

# podman when installed (daemonless); docker otherwise.
DOCKER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
KIND ?= kind
HELM ?= helm
KUBECTL ?= kubectl
REGISTRY ?= ghcr.io/modelops
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OPERATOR_IMAGE ?= $(REGISTRY)/modelops-operator:$(VERSION)
RUNTIME_IMAGE ?= $(REGISTRY)/modelops-runtime:$(VERSION)
KIND_CLUSTER ?= modelops
CHART_NAMESPACE ?= modelops-system

.PHONY: images image-operator image-runtime kind-up kind-load kind-install kind-down e2e-cluster

e2e-cluster:  ## the whole Kubernetes path on a real node (images, helm install, real pods)
	$(PYTHON) -m pytest -m realnode tests/cluster $(PYTEST_ARGS)

images:  ## build both container images with podman, cached by content hash (tools/images.py)
	$(PYTHON) tools/images.py build all

image-operator:  ## build the operator image (operator/Dockerfile)
	$(DOCKER) build -f operator/Dockerfile --build-arg VERSION=$(VERSION) -t $(OPERATOR_IMAGE) .

image-runtime:  ## build the training and inference image (trainer_image/Dockerfile)
	$(DOCKER) build -f trainer_image/Dockerfile --build-arg VERSION=$(VERSION) -t $(RUNTIME_IMAGE) .

kind-up: image-operator image-runtime  ## create the kind cluster, load the images, install the chart
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --config kind-config.yaml
	$(MAKE) kind-load kind-install

kind-load:  ## load both images into the kind cluster's nodes
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(RUNTIME_IMAGE)

kind-install:  ## install or upgrade the chart into the kind cluster
	$(KUBECTL) apply --server-side -f charts/modelops/crds/
	$(HELM) upgrade --install modelops charts/modelops --namespace $(CHART_NAMESPACE) \
	  --create-namespace --wait --timeout 5m

kind-down:  ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
