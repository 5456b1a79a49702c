# Control-plane targets; included by the top-level Makefile (`include tests/controlplane/cluster.mk`).
#
#   make cluster-build   build or reuse the pinned etcd/kube-*/kubectl/kwok/helm binaries
#   make cluster-up      start a detached control plane; prints the kubeconfig path
#                        (REAL_NODE=1: also a real node, kubelet + containerd, with the images)
#   make cluster-env     print `export KUBECONFIG=... PATH=...` for the running control plane
#   make cluster-status  print PIDs, dirs, liveness and RSS of the running control plane
#   make cluster-down    stop what cluster-up started and remove its temp dirs
#   make cluster-test    run the control-plane tests (starts their own control plane)

PYTHON ?= python3
CONTROLPLANE := $(PYTHON) tests/controlplane/cluster.py

.PHONY: cluster-build cluster-up cluster-down cluster-env cluster-status cluster-test

cluster-build:  ## build or reuse the pinned control-plane binaries
	$(CONTROLPLANE) build

cluster-up:  ## start a detached control plane; prints the kubeconfig path
	@$(CONTROLPLANE) up $(if $(REAL_NODE),--real-node)

cluster-down:  ## stop the control plane started by cluster-up
	@$(CONTROLPLANE) down

cluster-env:  ## print KUBECONFIG/PATH exports for the running control plane
	@$(CONTROLPLANE) env

cluster-status:  ## PIDs, dirs, liveness and RSS of the running control plane
	@$(CONTROLPLANE) status

cluster-test:  ## run the control-plane tests (own control plane)
	$(PYTHON) -m pytest -m cluster tests/cluster
