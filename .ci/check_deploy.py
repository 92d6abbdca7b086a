#!/usr/bin/env python3
"""Checks that deploy/ agrees with the code.

- Deployment containerPort == port of LISTEN_ADDR in the ConfigMap == port of
  ENV LISTEN_ADDR (and EXPOSE) in deploy/Dockerfile;
- liveness (and startup) probe is grpc on that port with service
  LIVENESS_SERVICE from src/startup/mod.rs; readiness is grpc on that port with
  service "" or absent;
- terminationGracePeriodSeconds > SHUTDOWN_DRAIN_DELAY_SECS +
  SHUTDOWN_GRACE_SECS (ConfigMap, else the defaults in src/config/);
- every ConfigMap/Secret key is an `env = "NAME"` in src/config/;
- the Service targets the grpc port and selects the Deployment's pods;
- envFrom names exist; the migrate Job runs `migrate` with the same image;
- deploy/Dockerfile's runtime stage (its last): OCI labels version,
  licenses and description as in Cargo.toml, revision and source from build
  args; USER is the pods' runAsUser:runAsGroup; ENTRYPOINT is the binary
  the migrate Job names; one `COPY --from=builder /out/chatbot-backend`
  (.ci/container_image.sh puts the host-built binary in its place);
- deploy/envoy/envoy.yaml: ext_authz is gRPC v3, fails closed, and reaches
  the server's port through a cluster that speaks HTTP/2 and health-checks
  a service the server reports; deploy/istio/: the provider names the
  Service's port and fails closed, the policy is CUSTOM with that provider.

Stdlib + PyYAML (installed with pip if missing). Exit 1 on any failure.
"""

import re
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "pyyaml"])
    import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONFIG_DIR = ROOT / "src" / "config"
CARGO_TOML = ROOT / "Cargo.toml"
STARTUP_RS = ROOT / "src" / "startup" / "mod.rs"

errors = []


def fail(msg):
    errors.append(msg)


def port_of(addr, what):
    m = re.fullmatch(r"(?:\[[^\]]+\]|[^:]+):(\d+)", str(addr).strip())
    if not m:
        fail(f"{what}: cannot read a port from {addr!r}")
        return None
    return int(m.group(1))


def load_docs():
    docs = []
    files = sorted(list(K8S.glob("*.yaml")) + list(K8S.glob("*.yml")))
    if not files:
        fail(f"no YAML files in {K8S}")
    for path in files:
        try:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is None:
                    continue
                if not isinstance(doc, dict) or "kind" not in doc:
                    fail(f"{path.name}: document without kind")
                    continue
                docs.append((path.name, doc))
        except yaml.YAMLError as e:
            fail(f"{path.name}: invalid YAML: {e}")
    return docs


def one(docs, kind, name=None):
    found = [(f, d) for f, d in docs if d.get("kind") == kind
             and (name is None or d.get("metadata", {}).get("name") == name)]
    if len(found) != 1:
        fail(f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
        return None, {}
    return found[0]


def config_env_names():
    text = "\n".join(f.read_text() for f in sorted(CONFIG_DIR.glob("*.rs")))
    names = set(re.findall(r'\benv\s*=\s*"([A-Z0-9_]+)"', text))
    if not names:
        fail("src/config/: found no env = \"NAME\" attributes")
    return names, text


def config_default(text, env):
    """default_value_t of the field whose #[arg] carries env = "ENV"."""
    m = re.search(r'env\s*=\s*"' + re.escape(env) + r'"[^)]*?default_value_t\s*=\s*(\d+)', text, re.S)
    return int(m.group(1)) if m else None


def liveness_service():
    m = re.search(r'const\s+LIVENESS_SERVICE\s*:\s*&str\s*=\s*"([^"]*)"\s*;', STARTUP_RS.read_text())
    if not m:
        fail("src/startup/mod.rs: LIVENESS_SERVICE constant not found")
        return None
    return m.group(1)


def dockerfile_port():
    text = DOCKERFILE.read_text()
    env_port = None
    for m in re.finditer(r"^\s*ENV\s+(.*)$", text, re.M):
        mm = re.search(r'(?:^|\s)LISTEN_ADDR[=\s]"?([^"\s]+)"?', m.group(1))
        if mm:
            env_port = port_of(mm.group(1), "Dockerfile ENV LISTEN_ADDR")
    if env_port is None:
        fail("deploy/Dockerfile: no ENV LISTEN_ADDR")
    exposed = {int(p) for m in re.finditer(r"^\s*EXPOSE\s+(.*)$", text, re.M)
               for p in re.findall(r"(\d+)", m.group(1))}
    if env_port is not None and env_port not in exposed:
        fail(f"deploy/Dockerfile: EXPOSE {sorted(exposed)} does not include LISTEN_ADDR port {env_port}")
    return env_port


def runtime_stage():
    """deploy/Dockerfile's last stage as (instruction, arguments) pairs, with
    continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    if not starts:
        fail("deploy/Dockerfile: no FROM")
        return []
    return [tuple((line.split(None, 1) + [""])[:2]) for line in lines[starts[-1]:]]


def check_runtime_stage(pod_user, job_command):
    """The image's labels, user and entrypoint against Cargo.toml and the manifests."""
    import tomllib
    package = tomllib.loads(CARGO_TOML.read_text())["package"]
    stage = runtime_stage()
    labels = {}
    for instruction, args in stage:
        if instruction.upper() == "LABEL":
            labels.update(re.findall(r'([\w.-]+)="([^"]*)"', args))
    want = {
        "org.opencontainers.image.version": package.get("version"),
        "org.opencontainers.image.licenses": package.get("license"),
        "org.opencontainers.image.description": package.get("description"),
        "org.opencontainers.image.revision": "${REVISION}",
        "org.opencontainers.image.source": "${SOURCE}",
    }
    for key, value in want.items():
        if labels.get(key) != value:
            fail(f"deploy/Dockerfile: LABEL {key}={labels.get(key)!r}, expected {value!r}")
    users = [args for instruction, args in stage if instruction.upper() == "USER"]
    if users != [pod_user]:
        fail(f"deploy/Dockerfile: runtime USER {users} != the pods' runAsUser:runAsGroup {pod_user}")
    entrypoints = [args for instruction, args in stage if instruction.upper() == "ENTRYPOINT"]
    if len(entrypoints) != 1 or json_list(entrypoints[0])[:1] != job_command[:1]:
        fail(f"deploy/Dockerfile: ENTRYPOINT {entrypoints} does not run the migrate Job's {job_command[:1]}")
    copies = [args for instruction, args in stage
              if instruction.upper() == "COPY" and args.startswith("--from=builder /out/chatbot-backend ")]
    if len(copies) != 1:
        fail("deploy/Dockerfile: the runtime stage needs one `COPY --from=builder /out/chatbot-backend ...` "
             "(.ci/container_image.sh replaces it with the host-built binary)")


def json_list(text):
    import json
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def check_probe(container, key, port, want_service, allow_absent):
    probe = container.get(key)
    if not probe:
        fail(f"Deployment: {key} missing")
        return
    grpc = probe.get("grpc")
    if not isinstance(grpc, dict):
        fail(f"Deployment: {key} is not a grpc probe")
        return
    if grpc.get("port") != port:
        fail(f"Deployment: {key} grpc port {grpc.get('port')!r} != container port {port}")
    service = grpc.get("service", None if allow_absent else "<absent>")
    if service is None:
        service = ""
    if service != want_service:
        fail(f"Deployment: {key} grpc service {service!r}, expected {want_service!r}")


def walk(node):
    """Every dict in a parsed YAML tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def readiness_services():
    text = STARTUP_RS.read_text()
    m = re.search(r"const READINESS_SERVICES: &\[&str\] = &\[(.*?)\];", text, re.S)
    if not m:
        fail("src/startup/mod.rs: READINESS_SERVICES not found")
        return set()
    names = set(re.findall(r'"([^"]*)"', m.group(1)))
    if "authorization_server::SERVICE_NAME" in m.group(1):
        names.add("envoy.service.auth.v3.Authorization")
    return names


def check_gateways(port):
    """The Envoy and Istio examples against the server's port and health."""
    envoy_path = ROOT / "deploy" / "envoy" / "envoy.yaml"
    envoy = yaml.safe_load(envoy_path.read_text())
    filters = [d for d in walk(envoy) if d.get("name") == "envoy.filters.http.ext_authz"
               and "typed_config" in d]
    if len(filters) != 1:
        fail(f"envoy.yaml: expected one ext_authz filter, found {len(filters)}")
        return
    authz = filters[0]["typed_config"]
    if authz.get("transport_api_version") != "V3":
        fail("envoy.yaml: ext_authz transport_api_version must be V3")
    if authz.get("failure_mode_allow", False):
        fail("envoy.yaml: ext_authz must fail closed (failure_mode_allow false)")
    cluster_name = authz.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name")
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    cluster = clusters.get(cluster_name)
    if cluster is None:
        fail(f"envoy.yaml: ext_authz cluster {cluster_name!r} is not defined")
        return
    ports = [d["port_value"] for d in walk(cluster) if "port_value" in d]
    if ports != [port]:
        fail(f"envoy.yaml: cluster {cluster_name} ports {ports} != server port {port}")
    if not any("http2_protocol_options" in d for d in walk(cluster)):
        fail(f"envoy.yaml: cluster {cluster_name} must speak HTTP/2 (gRPC)")
    health = [d["service_name"] for d in walk(cluster) if "service_name" in d]
    known = readiness_services()
    for name in health:
        if name not in known:
            fail(f"envoy.yaml: health check service {name!r} is not one the server reports")

    mesh = yaml.safe_load((ROOT / "deploy" / "istio" / "mesh-config.yaml").read_text())
    providers = {p["name"]: p for p in mesh["meshConfig"]["extensionProviders"]}
    for name, provider in providers.items():
        grpc = provider.get("envoyExtAuthzGrpc")
        if grpc is None:
            fail(f"istio provider {name}: expected envoyExtAuthzGrpc")
            continue
        if grpc.get("port") != port:
            fail(f"istio provider {name}: port {grpc.get('port')} != server port {port}")
        if grpc.get("failOpen", False):
            fail(f"istio provider {name}: must fail closed")
    policy = yaml.safe_load((ROOT / "deploy" / "istio" / "authorization-policy.yaml").read_text())
    spec = policy.get("spec", {})
    if spec.get("action") != "CUSTOM" or spec.get("provider", {}).get("name") not in providers:
        fail("istio AuthorizationPolicy: must be action CUSTOM with a provider of mesh-config.yaml")


def main():
    env_names, config_text = config_env_names()
    live = liveness_service()
    docker_port = dockerfile_port()
    docs = load_docs()

    _, cm = one(docs, "ConfigMap")
    _, secret = one(docs, "Secret")
    _, dep = one(docs, "Deployment")
    _, svc = one(docs, "Service")
    _, job = one(docs, "Job")

    cm_data = cm.get("data") or {}
    secret_keys = set((secret.get("stringData") or {})) | set((secret.get("data") or {}))
    for where, keys in (("ConfigMap", cm_data), ("Secret", secret_keys)):
        for k in sorted(keys):
            if k not in env_names:
                fail(f"{where}: {k} is not an env var in src/config/")
    if "DATABASE_URL" not in secret_keys:
        fail("Secret: DATABASE_URL missing")
    if "SECRET_KEY" not in secret_keys:
        fail("Secret: SECRET_KEY missing")
    if str(cm_data.get("MIGRATE_ON_START", "")).lower() != "false":
        fail("ConfigMap: MIGRATE_ON_START must be \"false\" (the migrate Job migrates)")

    cm_port = port_of(cm_data["LISTEN_ADDR"], "ConfigMap LISTEN_ADDR") if "LISTEN_ADDR" in cm_data else None
    if cm_port is None and "LISTEN_ADDR" not in cm_data:
        fail("ConfigMap: LISTEN_ADDR missing")

    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
    containers = pod.get("containers") or []
    if len(containers) != 1:
        fail(f"Deployment: expected one container, found {len(containers)}")
    c = containers[0] if containers else {}
    grpc_ports = [p for p in c.get("ports", []) if p.get("name") == "grpc"]
    port = grpc_ports[0].get("containerPort") if grpc_ports else None
    if port is None:
        fail("Deployment: no container port named grpc")
    for what, other in (("ConfigMap LISTEN_ADDR", cm_port), ("Dockerfile ENV LISTEN_ADDR", docker_port)):
        if port is not None and other is not None and other != port:
            fail(f"Deployment containerPort {port} != {what} port {other}")

    if live is not None and port is not None:
        check_probe(c, "livenessProbe", port, live, allow_absent=False)
        check_probe(c, "startupProbe", port, live, allow_absent=False)
        check_probe(c, "readinessProbe", port, "", allow_absent=True)

    def shutdown_secs(env):
        if env in cm_data:
            return int(cm_data[env])
        default = config_default(config_text, env)
        if default is None:
            fail(f"src/config/: no default_value_t for {env} (and not set in the ConfigMap)")
            return 0
        return default

    drain = shutdown_secs("SHUTDOWN_DRAIN_DELAY_SECS")
    grace = shutdown_secs("SHUTDOWN_GRACE_SECS")
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > drain + grace:
        fail(f"Deployment: terminationGracePeriodSeconds {tgps} must exceed "
             f"SHUTDOWN_DRAIN_DELAY_SECS {drain} + SHUTDOWN_GRACE_SECS {grace}")

    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        fail("Deployment: selector does not match the pod template labels")

    cm_name = cm.get("metadata", {}).get("name")
    secret_name = secret.get("metadata", {}).get("name")

    def check_env_from(what, container):
        refs = container.get("envFrom") or []
        cms = {r["configMapRef"]["name"] for r in refs if "configMapRef" in r}
        secs = {r["secretRef"]["name"] for r in refs if "secretRef" in r}
        if cm_name not in cms:
            fail(f"{what}: envFrom lacks configMapRef {cm_name}")
        if secret_name not in secs:
            fail(f"{what}: envFrom lacks secretRef {secret_name}")

    check_env_from("Deployment", c)

    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail("Deployment: runAsNonRoot not set")
    if not sc.get("readOnlyRootFilesystem"):
        fail("Deployment: readOnlyRootFilesystem not set")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail("Deployment: allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        fail("Deployment: capabilities must drop ALL")

    svc_spec = svc.get("spec", {})
    svc_ports = [p for p in svc_spec.get("ports", []) if p.get("name") == "grpc"]
    if not svc_ports:
        fail("Service: no port named grpc")
    else:
        sp = svc_ports[0]
        target = sp.get("targetPort", sp.get("port"))
        if target not in ("grpc", port):
            fail(f"Service: targetPort {target!r} is neither 'grpc' nor {port}")
        if sp.get("port") != port:
            fail(f"Service: port {sp.get('port')} != container port {port}")
        if sp.get("appProtocol") not in ("grpc", "kubernetes.io/h2c"):
            fail(f"Service: appProtocol {sp.get('appProtocol')!r}, expected grpc or kubernetes.io/h2c")
    svc_sel = svc_spec.get("selector") or {}
    if not svc_sel or any(pod_labels.get(k) != v for k, v in svc_sel.items()):
        fail("Service: selector does not match the Deployment's pod labels")

    job_pod = job.get("spec", {}).get("template", {})
    job_labels = job_pod.get("metadata", {}).get("labels", {}) or {}
    if svc_sel and all(job_labels.get(k) == v for k, v in svc_sel.items()):
        fail("Service: selector also matches the migrate Job's pods")
    job_cs = job_pod.get("spec", {}).get("containers") or []
    if len(job_cs) != 1:
        fail(f"Job: expected one container, found {len(job_cs)}")
    else:
        jc = job_cs[0]
        argv = list(jc.get("command") or []) + list(jc.get("args") or [])
        if "migrate" not in argv:
            fail(f"Job: command/args {argv} do not run `migrate`")
        if jc.get("image") != c.get("image"):
            fail(f"Job image {jc.get('image')!r} != Deployment image {c.get('image')!r}")
        check_env_from("Job", jc)

    pod_user = f"{psc.get('runAsUser')}:{psc.get('runAsGroup')}"
    job_psc = job_pod.get("spec", {}).get("securityContext") or {}
    if f"{job_psc.get('runAsUser')}:{job_psc.get('runAsGroup')}" != pod_user:
        fail("Job: runAsUser/runAsGroup differ from the Deployment's")
    job_command = list((job_cs[0].get("command") or []) if job_cs else [])
    check_runtime_stage(pod_user, job_command)

    if port is not None:
        check_gateways(port)

    if errors:
        print("deploy check FAILED:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"deploy check OK: port {port} (Dockerfile, ConfigMap, Deployment, Service); "
          f"probes liveness={live!r} readiness=''; "
          f"terminationGracePeriodSeconds {tgps} > drain {drain} + grace {grace}; "
          f"{len(cm_data)} ConfigMap + {len(secret_keys)} Secret keys known to src/config/; "
          f"Envoy and Istio examples reach port {port} and fail closed; "
          f"the image's labels, user {pod_user} and entrypoint agree with Cargo.toml and the pods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
