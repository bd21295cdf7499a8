"""A single-node Kubernetes on this machine, in one directory, on private loopback ports.

Why: KubeSpawner must be tested on a real cluster (pods that really run on a CNI bridge), and
there is no registry, kind or k3s here. The binaries come from ``scripts/k8s/build.sh``
(Debian's ``kubernetes`` source package); images are docker-archive tars imported into
containerd. Every daemon is a child process tracked by its PID and stopped in the order the
cluster needs (pods, then kubelet, controllers, containerd, apiserver, etcd).

Use from Python (``Cluster(bindir, workdir).start()`` / ``.stop()``, what the tests do) or
``python scripts/k8s/cluster.py up DIR`` (foreground; Ctrl-C stops it) for a manual session.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("COURTYARD_CLUSTER_CACHE", "/var/cache/courtyard-cluster"))
NOTEBOOK_TAR = CACHE / "images" / "courtyard-notebook.tar"
NOTEBOOK_IMAGE = "localhost/courtyard-notebook:latest"
HUB_TAR = CACHE / "images" / "courtyard-hub.tar"  # scripts/images/hub.sh
PAUSE_IMAGE = "localhost/pause:3.2"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"  # cni0's address: where pods reach the host (and a hub listening there)
BRIDGE = "cni0"
TOKEN = "courtyard-cluster-admin-token"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "pause")


def build(cached_only: bool = False) -> Path:
    """The directory of the cached binaries, building them first if needed (minutes once;
    with ``cached_only``, CalledProcessError instead of a build)."""
    script = Path(__file__).with_name("build.sh")
    env = {**os.environ, **({"COURTYARD_K8S_CACHED_ONLY": "1"} if cached_only else {})}
    out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True,
                         env=env)
    return Path(out.stdout.strip().splitlines()[-1])


def stale_bridge() -> bool:
    """Whether cni0 exists while no kubelet runs: left by a cluster that was killed."""
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode:
        return False
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "kubelet":
                return False
        except OSError:
            continue
    return True


def pause_image(bindir: Path) -> Path:
    """A docker-archive tar of the pause image made from the statically built ``pause``
    binary (no podman needed), written once next to the binaries."""
    target = bindir / "pause-image.tar"
    if target.exists():
        return target
    binary = (bindir / "pause").read_bytes()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        tar.addfile(info, io.BytesIO(binary))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/k8s/cluster.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_dir = diff_id.split(":")[1]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [PAUSE_IMAGE],
                            "Layers": [f"{layer_dir}/layer.tar"]}]).encode()
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((f"{layer_dir}/layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(target)
    return target


def free_port(taken: set[int] | None = None) -> int:
    """A port free now and below the kernel's ephemeral range: a port the kernel picks (bind
    to 0) can be handed out again as the local end of some outgoing connection, such as a
    daemon's own to the apiserver, before the daemon meant to listen on it binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        if taken and port in taken:
            continue
        with socket.socket() as s:  # wildcard: also taken if bound on any one address
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port


class ClusterError(RuntimeError):
    """The cluster did not come up; the message names the daemon and ends with its log."""


class Cluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and kubelet
    in ``workdir``; pods on the CNI bridge ``cni0`` (10.244.0.0/24). Everything listens on
    127.0.0.1 except the kubelet, on cni0's 10.244.0.1 (the node's address: the kubelet
    refuses a loopback one), which only this machine and its pods reach."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bin = bindir
        self.dir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        for name in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kubelet",
                     "kubelet_health"):
            self.ports[name] = free_port(set(self.ports.values()))
        self.kubeconfig = workdir / "kubeconfig"
        self.containerd_sock = workdir / "containerd" / "containerd.sock"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # -- talking to the apiserver (admin token; the serving cert is self-signed) ----------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """One API call; the decoded JSON answer, or None on 404."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path, data=data, method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    # -- start -----------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.dir / "logs" / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, name: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc_name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{proc_name} exited ({proc.returncode}) while waiting "
                                       f"for {name}:\n{self.log_tail(proc_name)}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.2)
        raise ClusterError(f"{name} not ready after {timeout:.0f} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write_files(self) -> None:
        d = self.dir
        for sub in ("logs", "certs", "etcd", "containerd/root", "containerd/state", "cni",
                    "kubelet"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout", "-out",
                        str(d / "sa.pub")], check=True, capture_output=True)
        (d / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "courtyard",
            "clusters": [{"name": "courtyard", "cluster": {
                "server": self.server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "courtyard", "context": {
                "cluster": "courtyard", "user": "admin", "namespace": "default"}}]}))
        (d / "containerd.toml").write_text(f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{self.containerd_sock}"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    # the CRI asks for a negative oom_score_adj, which root without CAP_SYS_RESOURCE may not set
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni"
""")
        (d / "cni" / "10-bridge.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "k8s-pods", "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "dataDir": str(d / "cni" / "ipam"),
                         "ranges": [[{"subnet": POD_SUBNET}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}}]}))
        (d / "kubelet-config.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # the node's address is cni0's: the kubelet refuses a loopback node IP, and the
            # apiserver reaches the kubelet (pod logs) at the node's address
            "address": GATEWAY, "port": self.ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.ports["kubelet_health"],
            "cgroupDriver": "cgroupfs", "failSwapOn": False,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"}, "enforceNodeAllocatable": [],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False, "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf"}))

    def _bridge(self) -> None:
        """cni0 with the gateway address before any pod exists, so a hub can listen there
        from the start (the bridge plugin adopts an existing bridge)."""
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        addrs = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE],
                               capture_output=True, text=True).stdout
        if f" {GATEWAY}/" not in addrs:
            subprocess.run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)

    def start(self, images: tuple[Path, ...] = ()) -> None:
        """Everything up and the node Ready; ``images`` (docker-archive tars) imported."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_files()
        self._bridge()
        d, p, b = self.dir, self.ports, self.bin
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        self._spawn("etcd", [
            "etcd", "--name", "courtyard", "--data-dir", str(d / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-cluster", f"courtyard=http://127.0.0.1:{p['etcd_peer']}",
            "--listen-metrics-urls", ""])
        self._spawn("containerd", ["containerd", "--config", str(d / "containerd.toml")])
        self._wait("etcd", lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=2), 30)
        self._spawn("apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={p['apiserver']}", "--insecure-port=0",
            f"--cert-dir={d / 'certs'}", f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.250.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP"])
        # images go in while the apiserver comes up
        self._wait("containerd", self.containerd_sock.exists, 30)
        for tar in images:
            self.import_image(tar)
        self._wait("apiserver", lambda: self.request("GET", "/readyz") == "ok", 90)
        self._spawn("controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={p['kcm']}", "--port=0",
            f"--service-account-private-key-file={d / 'sa.key'}",
            "--use-service-account-credentials=false",
            # service accounts get token secrets (what a hub in the cluster authenticates
            # with; the tests use one to check deploy/kubernetes/'s RBAC is enough)
            f"--root-ca-file={d / 'certs' / 'apiserver.crt'}",
            "--controllers=*", "--leader-elect=false"])
        self._spawn("scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={p['scheduler']}", "--port=0",
            "--leader-elect=false"])
        self._spawn("kubelet", [
            str(b / "kubelet"), f"--config={d / 'kubelet-config.yaml'}",
            f"--kubeconfig={self.kubeconfig}", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.containerd_sock}",
            f"--root-dir={d / 'kubelet'}", f"--node-ip={GATEWAY}", "--v=1"])
        self._wait("kubelet", self.node_ready, 120)

    def import_image(self, tar: Path) -> None:
        """Import a docker-archive tar into the cluster's containerd (``imagePullPolicy:
        Never`` pods run it)."""
        subprocess.run(["ctr", "-a", str(self.containerd_sock), "-n", "k8s.io", "images",
                        "import", str(tar)], check=True, stdout=subprocess.DEVNULL)

    def node_ready(self) -> bool:
        nodes = self.request("GET", "/api/v1/nodes") or {}
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for n in nodes.get("items", []) for c in n["status"].get("conditions", []))

    # -- stop ------------------------------------------------------------------------------------
    def _terminate(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def delete_all_pods(self, timeout: float = 60) -> None:
        """Delete every pod (grace 0) and wait until the kubelet has removed them."""
        try:
            pods = self.request("GET", "/api/v1/pods") or {"items": []}
        except (OSError, urllib.error.URLError):
            return
        for pod in pods["items"]:
            meta = pod["metadata"]
            self.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                         {"gracePeriodSeconds": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.request("GET", "/api/v1/pods") or {}).get("items"):
                return
            time.sleep(0.5)

    def _shims(self) -> list[int]:
        """PIDs of containerd shims serving this cluster's containerd (they outlive it)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and \
                    str(self.containerd_sock).encode() in cmd:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Pods first, then kubelet, controllers, containerd, apiserver, etcd; then what they
        leave behind (shims, mounts under the directory, the bridge)."""
        if "kubelet" in self.procs and "apiserver" in self.procs:
            try:
                self.delete_all_pods()
            except Exception as e:  # a broken cluster must still be stopped
                print(f"cluster: deleting pods failed: {e}", file=sys.stderr)
        for name in ("kubelet", "controller-manager", "scheduler", "containerd"):
            self._terminate(name)
        for pid in self._shims():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in ("apiserver", "etcd"):
            self._terminate(name)
        for name in list(self.procs):
            self._terminate(name)
        prefix = str(self.dir) + "/"
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def main(argv: list[str]) -> int:
    """``cluster.py up DIR``: run a cluster in the foreground until interrupted;
    ``cluster.py images``: build the binaries and the pause image tar (CI's step)."""
    if len(argv) == 1 and argv[0] == "images":
        print(pause_image(build()))
        return 0
    if len(argv) != 2 or argv[0] != "up":
        print(main.__doc__, file=sys.stderr)
        return 2
    bindir = build()
    cluster = Cluster(bindir, Path(argv[1]).resolve())
    try:
        cluster.start((pause_image(bindir), NOTEBOOK_TAR))
        print(f"Ready. KUBECONFIG={cluster.kubeconfig}", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
