"""A real node for the test control plane: containerd + runc + CNI bridge + kubelet + kube-proxy.

Pods scheduled here run as real containers on this machine. Besides the node, this module
runs the two cluster add-ons real pods need: CoreDNS (service names) and kube-proxy
(ClusterIP Services, including ``kubernetes.default`` for in-cluster clients), both as
host processes.

- The node's address is ``NODE_IP`` on the loopback device, so the API server, the kubelet
  and CoreDNS listen on an address that pods reach through their default route.
- containerd is Debian's (1.6); the kubelet of the pinned Kubernetes release falls back to
  its own ``cgroupDriver`` with it and runs on this machine's cgroup v1 with
  ``failCgroupV1: false``.
- Pods get addresses from a CNI ``bridge`` (``POD_SUBNET``) with host-local IPAM whose
  state lives in the node's run folder.
- The node carries the taint ``TAINT``, so workloads of other tests (meant for KWOK nodes)
  never land on it; a namespace opts in with :func:`namespace_annotations` (the API server
  runs the PodNodeSelector and PodTolerationRestriction admission plugins).
- The project's images go from podman into containerd through a registry on loopback
  that the node runs (Debian's ``docker-registry``): podman pushes only the layers the
  registry lacks, containerd pulls only the layers it lacks. The registry's storage and
  containerd's root folder are cached, so a code change moves one small layer. The pause
  image is imported from an OCI archive.

The module has no import of ``cluster.py``: the control plane hands it its paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

NODE_IP = "10.250.0.1"
NODE_NAME = "modelops-node-0"
POD_SUBNET = "10.244.128.0/24"
CLUSTER_DOMAIN = "cluster.local"
TAINT = {"key": "modelops.dev/real-node", "value": "true", "effect": "NoSchedule"}
NODE_LABELS = {"modelops.dev/real-node": "true"}
PAUSE_IMAGE = "localhost/modelops-pause:1"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
REGISTRY = "docker-registry"  # Debian's build of the CNCF distribution registry
# A fixed address: podman remembers which compressed layers each registry (by host:port)
# holds, and only then skips compressing them again.
REGISTRY_ADDRESS = "127.0.0.1:5405"

PAUSE_C = r"""
/* The sandbox process of a pod: holds its namespaces, reaps orphans, exits on a signal. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &q, NULL);
  sigaction(SIGTERM, &q, NULL);
  sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
  return 1;
}
"""


def namespace_annotations() -> dict[str, str]:
    """Annotations that send a namespace's pods to the real node (and only there)."""
    selector = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    return {
        "scheduler.alpha.kubernetes.io/node-selector": selector,
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
            [
                {
                    "key": TAINT["key"],
                    "operator": "Equal",
                    "value": TAINT["value"],
                    "effect": TAINT["effect"],
                }
            ]
        ),
    }


def ensure_node_ip() -> str | None:
    """Put NODE_IP on the loopback device (root only); None when that is not possible."""
    present = subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=False
    )
    if f"inet {NODE_IP}/" in present.stdout:
        return NODE_IP
    proc = subprocess.run(
        ["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"], capture_output=True, check=False
    )
    return NODE_IP if proc.returncode == 0 else None


def missing_prerequisites() -> list[str]:
    """What this machine lacks for a real node (empty when it can run one)."""
    missing = [
        tool
        for tool in ("containerd", "runc", "ctr", "iptables", "gcc", REGISTRY)
        if shutil.which(tool) is None
    ]
    if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
        missing.append("CNI plugins (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def cache_root() -> Path:
    base = os.environ.get("MODELOPS_CACHE") or str(Path.home() / ".cache" / "modelops")
    return Path(base) / "node"


class RealNode:
    """containerd, kubelet, kube-proxy and CoreDNS for one control plane."""

    def __init__(
        self,
        *,
        bin_dir: Path,
        pki: Path,
        api_url: str,
        log_dir: Path,
        sign: Callable[[Path, str, str, list[str]], None],
        kubeconfig_for: Callable[[Path, str, str], None],
        log: Callable[[str], None],
        detached: bool = False,
    ) -> None:
        self.bin_dir = bin_dir
        self.pki = pki
        self.api_url = api_url
        self.log_dir = log_dir
        self.sign = sign
        self.kubeconfig_for = kubeconfig_for
        self.log = log
        # Socket paths must stay short (108 bytes); the run folder is per control plane.
        digest = hashlib.sha256(api_url.encode()).hexdigest()[:8]
        self.run_dir = Path(f"/run/modelops-node-{digest}")
        self.containerd_root = cache_root() / "containerd"
        self.socket = self.run_dir / "containerd.sock"
        self.detached = detached
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.attached_pids: dict[str, int] = {}  # processes of a node started elsewhere
        self.timings: dict[str, float] = {}

    # -- life -------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        missing = missing_prerequisites()
        if missing:
            raise RuntimeError("a real node needs: " + ", ".join(missing))
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _sysctls()
        self._write_config()
        self._spawn("containerd", ["containerd", "--config", str(self.run_dir / "containerd.toml")])
        _wait("containerd", lambda: self._ctr("version").returncode == 0, 60)
        pause = self._pause_archive()
        self.load_image(PAUSE_IMAGE, pause.name, lambda: pause)
        self.timings["containerd"] = time.monotonic() - t0
        self._spawn("kubelet", self._kubelet_args())
        self._spawn("kube-proxy", self._kube_proxy_args())
        self._spawn(
            "coredns", ["-conf", str(self.run_dir / "Corefile")], exe=str(self.bin_dir / "coredns")
        )
        _wait("kubelet /healthz", lambda: _http_ok(f"http://127.0.0.1:{self.healthz_port}/healthz"), timeout,
              alive=self._check_alive)  # fmt: skip
        self.timings["kubelet"] = time.monotonic() - t0

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()} or dict(self.attached_pids)

    def stop(self) -> None:
        for name in ("coredns", "kube-proxy", "kubelet", "registry"):
            self._stop_one(name)
        self._remove_containers()
        self._stop_one("containerd")
        _kill_shims(self.socket)
        if (self.bin_dir / "kube-proxy").exists():
            subprocess.run(
                [str(self.bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, check=False
            )
        _unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _stop_one(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            _terminate(proc, 10.0)
        pid = self.attached_pids.pop(name, None)
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log_tail = _tail(self.log_dir / f"{name}.log", 40)
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_tail}")

    # -- images -----------------------------------------------------------------------------

    def load_image(
        self, reference: str, content_id: str, make_archive: Callable[[], Path]
    ) -> float:
        """Import an image unless containerd already holds this content; seconds spent.

        `content_id` names the content; `make_archive` returns an OCI archive of it (the
        caller's to keep or remove), called only when an import is needed. The project's
        own images come in through `load_built_image` instead.
        """
        if self._holds(reference, content_id):
            return 0.0
        started = time.monotonic()
        archive = make_archive()
        repository, _, _ = reference.rpartition(":")
        proc = self._unpacking(
            f"ctr images import {reference}", lambda: self._import(archive, repository)
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import {reference}: {proc.stderr}")
        if reference not in self._ctr("-n", "k8s.io", "images", "ls", "-q").stdout.split():
            raise RuntimeError(f"ctr images import did not create {reference}: {proc.stdout}")
        self._keep(reference, content_id)
        spent = time.monotonic() - started
        self.log(f"imported {reference} into containerd in {spent:.0f}s")
        return spent

    def load_built_image(
        self, reference: str, content_id: str, push: Callable[[str], None]
    ) -> float:
        """Bring a locally built image into containerd unless it holds this content already;
        seconds spent.

        The image travels through a registry on loopback that the node runs: `push(target)`
        pushes it there, and containerd pulls it. Each side skips the layers it already
        has, so after a code change one small layer moves, where saving and importing an
        archive would move the gigabytes of torch every time. The registry's storage, like
        containerd's root, survives sessions.
        """
        if self._holds(reference, content_id):
            return 0.0
        started = time.monotonic()
        repository, _, _ = reference.rpartition(":")
        staged = f"{self._registry()}/{repository.partition('/')[2]}:{content_id}"
        push(staged)
        proc = self._unpacking(
            f"ctr images pull {staged}",
            lambda: self._ctr(
                "-n", "k8s.io", "images", "pull", "--plain-http", "--snapshotter", "overlayfs",
                staged,
            ),
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images pull {staged}: {proc.stderr}")
        tagged = self._ctr("-n", "k8s.io", "images", "tag", "--force", staged, reference)
        if tagged.returncode != 0:
            raise RuntimeError(f"ctr images tag {staged} {reference}: {tagged.stderr}")
        self._ctr("-n", "k8s.io", "images", "rm", staged)  # the name only; the content stays
        self._keep(reference, content_id)
        spent = time.monotonic() - started
        self.log(f"pulled {reference} into containerd in {spent:.0f}s")
        return spent

    def _unpacking(
        self, what: str, attempt: Callable[[], subprocess.CompletedProcess[str]]
    ) -> subprocess.CompletedProcess[str]:
        """Run an import or pull, again up to twice when its unpacking raced containerd's
        garbage collection of the snapshots of the image it replaces ("parent snapshot ...
        does not exist")."""
        for tries in range(3):
            proc = attempt()
            if proc.returncode == 0 or "snapshot" not in proc.stderr or tries == 2:
                break
            self.log(f"{what}: {proc.stderr.strip()}; retrying")
            time.sleep(2)
        return proc

    def _marker(self, reference: str) -> Path:
        digest = hashlib.sha256(reference.encode()).hexdigest()
        return self.containerd_root / "modelops-imported" / digest

    def _holds(self, reference: str, content_id: str) -> bool:
        marker = self._marker(reference)
        listed = self._ctr("-n", "k8s.io", "images", "ls", "-q").stdout.split()
        return reference in listed and marker.exists() and marker.read_text() == content_id

    def _keep(self, reference: str, content_id: str) -> None:
        # Pinned so the kubelet's image garbage collection never removes it.
        self._ctr("-n", "k8s.io", "images", "label", reference, "io.cri-containerd.pinned=pinned")
        self._forget_replaced_images()
        marker = self._marker(reference)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(content_id)

    def _registry(self) -> str:
        """host:port of the node's image registry, started on first use."""
        proc = self.procs.get("registry")
        if proc is not None and proc.poll() is None:
            return REGISTRY_ADDRESS
        storage = cache_root() / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}}}\n"
            f"http: {{addr: {REGISTRY_ADDRESS}}}\n"
        )
        self._spawn("registry", ["serve", str(config)], exe=shutil.which(REGISTRY))
        _wait("image registry", lambda: _http_ok(f"http://{REGISTRY_ADDRESS}/v2/"), 30,
              alive=self._check_alive)  # fmt: skip
        return REGISTRY_ADDRESS

    def _import(self, archive: Path, repository: str) -> subprocess.CompletedProcess[str]:
        # The archive names its image by tag (podman) or by full reference; --base-name
        # turns a bare tag into `repository:tag`. Unpacked now, into the snapshotter the CRI
        # uses, rather than at the first container start, where unpacking gigabytes runs
        # into the kubelet's request timeout.
        return self._ctr(
            "-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs",
            "--base-name", repository, str(archive),
        )  # fmt: skip

    def _forget_replaced_images(self) -> None:
        """Drop the CRI's `sha256:<config>` names of images no tag points to any more.

        The CRI names every image it has seen by its config digest too; those names would
        keep each replaced image's gigabytes of content and snapshots alive. Without them
        containerd's garbage collector removes what a new import replaced."""
        rows = [
            line.split()
            for line in self._ctr("-n", "k8s.io", "images", "ls").stdout.splitlines()[1:]
        ]
        current = {row[2] for row in rows if len(row) > 2 and not row[0].startswith("sha256:")}
        for row in rows:
            if len(row) > 2 and row[0].startswith("sha256:") and row[2] not in current:
                self._ctr("-n", "k8s.io", "images", "rm", row[0])

    def _pause_archive(self) -> Path:
        """A one-file image holding a static `pause` compiled from PAUSE_C, built once."""
        folder = cache_root() / "pause"
        digest = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]
        archive = folder / f"pause-{digest}.tar"
        if archive.exists():
            return archive
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(self.run_dir / "pause-build")
        (work / "rootfs").mkdir(parents=True, exist_ok=True)
        (work / "pause.c").write_text(PAUSE_C)
        subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "rootfs" / "pause"), str(work / "pause.c")],
                       check=True)  # fmt: skip
        _oci_archive_of(work / "rootfs", ["/pause"], archive)
        return archive

    # -- configuration ----------------------------------------------------------------------

    @property
    def healthz_port(self) -> int:
        return 10248

    def _write_config(self) -> None:
        run = self.run_dir
        cni_bin = next(d for d in CNI_BIN_DIRS if Path(d, "bridge").exists())
        (run / "net.d").mkdir(exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        (run / "containerd.toml").write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.containerd_root}"',
                    f'state = "{run / "containerd-state"}"',
                    "[grpc]",
                    f'  address = "{self.socket}"',
                    '[plugins."io.containerd.grpc.v1.cri"]',
                    f'  sandbox_image = "{PAUSE_IMAGE}"',
                    # Without CAP_SYS_RESOURCE (sandboxed hosts) runc cannot lower a
                    # process's oom_score_adj below its parent's: clamp instead of failing.
                    "  restrict_oom_score_adj = true",
                    '[plugins."io.containerd.grpc.v1.cri".cni]',
                    f'  bin_dir = "{cni_bin}"',
                    f'  conf_dir = "{run / "net.d"}"',
                    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
                    '  runtime_type = "io.containerd.runc.v2"',
                    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
                    "  SystemdCgroup = false",
                    "",
                ]
            )
        )
        (run / "net.d" / "10-modelops.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "modelops",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "mo-cni0",
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(run / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        # The node's client certificate: the Node authorizer grants it what its pods need.
        self.sign(self.pki, "kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ])  # fmt: skip
        self.kubeconfig_for(run / "kubelet.kubeconfig", "kubelet", self.api_url)
        self.kubeconfig_for(run / "admin.kubeconfig", "admin", self.api_url)
        (run / "resolv.conf").write_text(_host_resolv_conf())
        (run / "kubelet.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "address": NODE_IP,
                    "port": 10250,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": self.healthz_port,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(self.pki / "ca.crt")},
                    },
                    # Only holders of a certificate from the cluster CA reach it (the API
                    # server's client certificate): no webhook round trips in tests.
                    "authorization": {"mode": "AlwaysAllow"},
                    "clusterDNS": [NODE_IP],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(run / "resolv.conf"),
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "imageServiceEndpoint": f"unix://{self.socket}",
                    "registerWithTaints": [TAINT],
                    "serializeImagePulls": False,
                    "runtimeRequestTimeout": "10m",
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "evictionPressureTransitionPeriod": "10s",
                    "nodeStatusUpdateFrequency": "5s",
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "10s",
                    "maxPods": 60,
                    "localStorageCapacityIsolation": True,
                    "enforceNodeAllocatable": ["pods"],
                    "shutdownGracePeriod": "0s",
                    "logging": {"verbosity": 1},
                }
            )
        )
        (run / "Corefile").write_text(
            f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {run / "admin.kubeconfig"}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . {run / "resolv.conf"}
    cache 5
}}
"""
        )

    def _kubelet_args(self) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        return [
            f"--config={self.run_dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.run_dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.run_dir / 'kubelet'}",
            f"--cert-dir={self.run_dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={labels}",
            "--v=1",
        ]

    def _kube_proxy_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.run_dir / 'admin.kubeconfig'}",
            "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}",
            f"--cluster-cidr={POD_SUBNET}",
            "--bind-address=127.0.0.1",
            "--healthz-bind-address=127.0.0.1:10256",
            "--metrics-bind-address=127.0.0.1:10249",
            "--conntrack-max-per-core=0",
            "--v=1",
        ]

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], exe: str | None = None) -> None:
        program = exe or (
            shutil.which(args[0]) if name == "containerd" else str(self.bin_dir / name)
        )
        argv = args[1:] if name == "containerd" else args
        logf = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen(
                [str(program), *argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,
                preexec_fn=None if self.detached else _set_pdeathsig,
            )
        finally:
            logf.close()
        self.procs[name] = proc

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def _remove_containers(self) -> None:
        """Kill every container of the node (pods may outlive the kubelet otherwise)."""
        if "containerd" not in self.procs and "containerd" not in self.attached_pids:
            return
        tasks = self._ctr("-n", "k8s.io", "tasks", "ls", "-q").stdout.split()
        for task in tasks:
            self._ctr("-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task)
        deadline = time.monotonic() + 15
        while (
            time.monotonic() < deadline
            and self._ctr("-n", "k8s.io", "tasks", "ls", "-q").stdout.strip()
        ):
            self._ctr("-n", "k8s.io", "tasks", "ls", "-q")
            time.sleep(0.5)
            for task in self._ctr("-n", "k8s.io", "tasks", "ls", "-q").stdout.split():
                self._ctr("-n", "k8s.io", "tasks", "delete", "-f", task)
        for container in self._ctr("-n", "k8s.io", "containers", "ls", "-q").stdout.split():
            self._ctr("-n", "k8s.io", "containers", "delete", container)
        for netns in Path("/var/run/netns").glob("cni-*"):
            subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True, check=False)


# -- helpers ------------------------------------------------------------------------------------


def _sysctls() -> None:
    for key, value in (
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/ipv4/conf/all/route_localnet", "1"),
    ):
        path = Path("/proc/sys") / key
        if path.exists():
            with contextlib.suppress(OSError):
                path.write_text(value)


def _host_resolv_conf() -> str:
    """The host's resolvers, without loopback ones (pods cannot reach the host's 127.x)."""
    lines = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["nameserver"] and len(parts) > 1 and parts[1].startswith("127."):
                continue
            lines.append(line)
    if not any(line.startswith("nameserver") for line in lines):
        lines.append("nameserver 192.0.2.1")
    return "\n".join(lines) + "\n"


def _oci_archive_of(rootfs: Path, entrypoint: list[str], archive: Path) -> None:
    """A single-layer OCI image archive (tar of an OCI layout) of one folder."""
    import io
    import tarfile

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    layer_digest, layer = blob(layer_buf.getvalue())
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_digest, config = blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest, manifest = blob(manifest)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "org.opencontainers.image.ref.name": PAUSE_IMAGE.rpartition(":")[2]
                    },
                }
            ],
        }
    ).encode()
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", index)
        for digest, data in (
            (layer_digest, layer),
            (config_digest, config),
            (manifest_digest, manifest),
        ):
            add(f"blobs/sha256/{digest.split(':')[1]}", data)
    os.replace(tmp, archive)


def _set_pdeathsig() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _kill_shims(socket: Path) -> None:
    """containerd's shims outlive it by design; end the ones of this node."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and str(socket).encode() in b" ".join(cmdline)
        ):
            with contextlib.suppress(OSError):
                os.kill(int(proc_dir.name), signal.SIGKILL)


def _unmount_under(folder: Path) -> None:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(str(folder) + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _wait(
    what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
