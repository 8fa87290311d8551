"""Offline checks of the Helm chart `helm/licensing` and its example workload chart.

Run by `tests/chart.rs` with the Python of `.tools/helm` (helm-python-sdk: Helm 4's own SDK;
kubernetes-validate: the Kubernetes API's schemas), no cluster:

- `helm lint --strict` of both charts, with every values file, for each Kubernetes version;
- every manifest rendered from the default values and from the production, TLS, monitoring and
  sidecar values files, validated strictly against Kubernetes 1.29, 1.33 and 1.37; custom
  resources (ServiceMonitor) are listed as skipped by name, any other unknown kind fails;
- the restricted Pod Security fields on every pod and container, and what the chart promises
  (one replica, volume claim template, gRPC probes on the health port, ...);
- values the schema or the templates must refuse, each message naming its key.

Prints a report and exits 1 when any check failed. `--price-list-out PATH` writes the price list
the production values render, and `--args-out PATH` the command lines of the service and the
collector each values set renders (JSON), for the caller to check with the binaries' own
configuration parsers.
"""

import argparse
import json
import pathlib
import re
import shutil
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml
from helm_python import _native

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "licensing"
EXAMPLE = ROOT / "helm" / "examples" / "agent-gateway"
KUBERNETES = ["1.29.0", "1.33.0", "1.37.0"]
# Custom resources: no schema in kubernetes-validate; skipped, and said so by name.
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
MONITORING_API = "monitoring.coreos.com/v1"
RELEASE, NAMESPACE = "licensing", "licensing"

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
    return condition


def values_file(path):
    return yaml.safe_load(path.read_text()) or {}


def render(chart, values, kube, api_versions=(), release=RELEASE):
    """Every rendered manifest as (template, document); NOTES.txt as text."""
    # Chart.render has no capability options; the library's call takes them.
    options = {
        "name": release,
        "namespace": NAMESPACE,
        "kube_version": "v" + kube,
        "api_versions": list(api_versions),
    }
    rendered = json.loads(
        _native.call_string(
            "helm_render",
            chart._raw(),
            json.dumps(values) if values else None,
            json.dumps(options),
        )
    )
    documents, notes = [], ""
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            notes += text
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((template, document))
    return documents, notes


def name_of(document):
    return f"{document['kind']}/{document['metadata']['name']}"


def pods(documents):
    """(name, pod spec) of every pod the manifests make."""
    for _, document in documents:
        kind = document["kind"]
        if kind == "Pod":
            yield name_of(document), document["spec"]
        elif kind in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
            yield name_of(document), document["spec"]["template"]["spec"]


def of_kind(documents, kind):
    return [d for _, d in documents if d["kind"] == kind]


def restricted(case, documents):
    """The restricted Pod Security profile, on every pod and every container."""
    count = 0
    for pod_name, pod in pods(documents):
        where = f"{case}: {pod_name}"
        context = pod.get("securityContext", {})
        check(context.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot is not true")
        check(
            context.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{where}: pod seccompProfile is not RuntimeDefault",
        )
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            check(not pod.get(host), f"{where}: {host} is set")
        for volume in pod.get("volumes", []):
            check("hostPath" not in volume, f"{where}: volume {volume['name']} is a hostPath")
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        check(containers, f"{where}: no containers")
        for container in containers:
            at = f"{where} container {container['name']}"
            sc = container.get("securityContext", {})
            check(sc.get("allowPrivilegeEscalation") is False, f"{at}: allowPrivilegeEscalation is not false")
            check(sc.get("readOnlyRootFilesystem") is True, f"{at}: readOnlyRootFilesystem is not true")
            check(sc.get("runAsNonRoot") is True, f"{at}: runAsNonRoot is not true")
            check(sc.get("privileged") is not True, f"{at}: privileged")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{at}: capabilities not all dropped")
            check(not sc.get("capabilities", {}).get("add"), f"{at}: capabilities added")
            check(
                sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                f"{at}: seccompProfile is not RuntimeDefault",
            )
            check(sc.get("runAsUser", 1) != 0, f"{at}: runs as root")
            check("resources" in container and container["resources"].get("requests"), f"{at}: no resource requests")
            count += 1
    return count


def validate(case, documents, kube, summary):
    """Strict validation against one Kubernetes version; custom resources skipped by name."""
    entry = summary.setdefault(kube, {"valid": 0, "skipped": set(), "cases": set()})
    entry["cases"].add(case)
    for template, document in documents:
        key = (document["apiVersion"], document["kind"])
        if key in CUSTOM_RESOURCES:
            entry["skipped"].add(f"{name_of(document)} ({document['apiVersion']})")
            continue
        try:
            kubernetes_validate.validate(document, kube, strict=True)
            entry["valid"] += 1
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            failures.append(f"{case}: {template} {name_of(document)} invalid on {kube}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            failures.append(f"{case}: {template} {name_of(document)}: {e.message}")


def lint(chart, case, values):
    for kube in KUBERNETES:
        report = helm.lint(chart, values or None, strict=True, kube_version="v" + kube)
        for message in report["messages"]:
            # Severity 1 is informational ("icon is recommended"); warnings fail under --strict.
            check(message["severity"] < 2, f"lint {case} on {kube}: {message['path']}: {message['error']}")
        for error in report["errors"]:
            failures.append(f"lint {case} on {kube}: {error}")
    print(f"lint --strict {case}: {len(KUBERNETES)} Kubernetes versions, no warning or error"
          if not [f for f in failures if f.startswith(f"lint {case} ")] else f"lint --strict {case}: FAILED")


def server_promises(case, documents, values):
    """What the chart promises of the licensing pod, beyond the restricted profile."""
    sets = of_kind(documents, "StatefulSet")
    if not check(len(sets) == 1, f"{case}: {len(sets)} StatefulSets"):
        return
    statefulset = sets[0]
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == 1, f"{case}: replicas {spec['replicas']}")
    claims = spec.get("volumeClaimTemplates", [])
    check([c["metadata"]["name"] for c in claims] == ["data"], f"{case}: volume claim templates {claims}")
    check(pod["securityContext"].get("fsGroupChangePolicy") == "OnRootMismatch", f"{case}: fsGroupChangePolicy")
    check("fsGroup" in pod["securityContext"], f"{case}: no fsGroup")
    check(not pod.get("initContainers"), f"{case}: the server pod has init containers")
    check(pod.get("enableServiceLinks") is False, f"{case}: enableServiceLinks is not false")
    check(pod.get("automountServiceAccountToken") is False, f"{case}: the service account token is mounted")
    (container,) = pod["containers"]
    arguments = dict(a.split("=", 1) if "=" in a else (a, "") for a in container["args"])
    grace = int(arguments["--shutdown-grace-seconds"])
    check(pod["terminationGracePeriodSeconds"] > grace,
          f"{case}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= drain {grace}")
    health = int(arguments["--health-listen"].rsplit(":", 1)[1])
    for probe, service in (("startupProbe", ""), ("readinessProbe", ""), ("livenessProbe", "liveness")):
        grpc = container.get(probe, {}).get("grpc")
        check(grpc is not None, f"{case}: {probe} is not a native grpc probe")
        if grpc:
            check(grpc["port"] == health, f"{case}: {probe} on port {grpc['port']}, health is on {health}")
            check(grpc.get("service", "") == service, f"{case}: {probe} asks for {grpc.get('service')!r}")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(mounts.get("/tmp") in volumes and "emptyDir" in volumes[mounts["/tmp"]], f"{case}: no emptyDir on /tmp")
    check(mounts.get("/var/lib/licensing") == "data", f"{case}: the data volume is not mounted")
    check(arguments["--data-dir"].startswith("/var/lib/licensing/"), f"{case}: --data-dir off the volume")
    check(not any(a == "--insecure" for a in container["args"]), f"{case}: --insecure without auth.insecure")
    credentials = [a for a in arguments if a in ("--api-keys", "--jwks", "--client-certificates")]
    check(credentials, f"{case}: no credential configured")
    for name, volume in volumes.items():
        if "secret" in volume:
            check(volume["secret"].get("secretName"), f"{case}: secret volume {name} without a name")
    services = [s for s in of_kind(documents, "Service") if s["spec"].get("clusterIP") != "None"]
    check(len(services) == 1, f"{case}: {len(services)} client Services")
    for service in services:
        grpc = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        check(grpc and grpc[0].get("appProtocol") == "grpc", f"{case}: the grpc port has no appProtocol grpc")
    check(of_kind(documents, "PodDisruptionBudget"), f"{case}: no PodDisruptionBudget")
    (policy,) = of_kind(documents, "NetworkPolicy")
    egress_ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    check(53 in egress_ports, f"{case}: no DNS egress")
    otlp = values.get("otlp", {}).get("endpoint")
    if otlp:
        check(values["otlp"].get("port", 4317) in egress_ports, f"{case}: no OTLP egress")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == otlp, f"{case}: OTEL_EXPORTER_OTLP_ENDPOINT not set")
    tests = [d for _, d in documents if d["kind"] == "Pod"
             and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    check(len(tests) == 1, f"{case}: {len(tests)} helm test pods")
    for test in tests:
        for test_container in test["spec"]["containers"]:
            check(test_container["image"] == container["image"], f"{case}: the test pod uses another image")
            check(test_container["command"][:2] == ["/usr/local/bin/licensing", "healthcheck"],
                  f"{case}: the test pod does not run licensing healthcheck")
    return container


def collector_promises(case, documents, native):
    (deployment,) = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    where = "initContainers" if native else "containers"
    collectors = [c for c in pod.get(where, []) if c["name"] == "licensing-collector"]
    if not check(len(collectors) == 1, f"{case}: no licensing-collector in {where}"):
        return None, None
    (collector,) = collectors
    if native:
        check(collector.get("restartPolicy") == "Always", f"{case}: the native sidecar has no restartPolicy Always")
    else:
        check("restartPolicy" not in collector, f"{case}: a plain container with restartPolicy")
        check(not pod.get("initContainers"), f"{case}: the fallback still has init containers")
    mounts = {m["name"]: m for m in collector["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    spool = [m for m in collector["volumeMounts"] if m["mountPath"] == "/var/lib/licensing-collector"]
    check(spool and spool[0]["name"] in volumes, f"{case}: the spool is not on a pod volume")
    check(any(a.startswith("--api-key-file=") for a in collector["args"]), f"{case}: no collector credential")
    key_volume = mounts.get("licensing-collector-key")
    check(key_volume and "secret" in volumes.get("licensing-collector-key", {}), f"{case}: key not from a Secret")
    workload = [c for c in pod["containers"] if c["name"] != "licensing-collector"]
    shared = {m["name"] for c in workload for m in c.get("volumeMounts", [])}
    check(any(m in shared for m in mounts), f"{case}: the workload shares no volume with the collector")
    return (volumes[spool[0]["name"]] if spool else None), collector


def refused(chart, values, expected, kube="1.33.0"):
    """`values` must be refused, the message naming every string in `expected`."""
    try:
        render(chart, values, kube)
    except helm.HelmError as e:
        message = " ".join(str(e).split())
        check(all(x in message for x in expected), f"refusal of {values} does not say {expected}: {message}")
        print(f"refused {json.dumps(values)}:\n    {message}")
        return
    failures.append(f"{values} was not refused")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--price-list-out", type=pathlib.Path)
    parser.add_argument("--args-out", type=pathlib.Path)
    arguments = parser.parse_args()

    print(f"Helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}")
    templates = sorted((CHART / "templates").rglob("*"))
    for template in templates:
        if template.is_file():
            # `lookup` reads the cluster: it renders differently offline and in GitOps tools.
            check(not re.search(r"\blookup\s+\"", template.read_text()), f"{template.name} uses lookup")

    chart = helm.Chart.load(CHART)
    cases = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        cases[path.name.removesuffix("-values.yaml")] = values_file(path)
    for case, values in cases.items():
        lint(CHART, case, values)

    summary = {}
    containers = 0
    rendered = {}
    command_lines = {"server": {}, "collector": {}}
    for case, values in cases.items():
        api = [MONITORING_API] if case == "monitoring" else []
        for kube in KUBERNETES:
            documents, notes = render(chart, values, kube, api)
            check("port-forward" in notes and "grpcurl" in notes, f"{case}: NOTES.txt without port-forward and grpcurl")
            validate(case, documents, kube, summary)
        rendered[case] = documents
        containers += restricted(case, documents)
        server = server_promises(case, documents, values)
        if server:
            command_lines["server"][case] = server["command"] + server["args"]

    # The ServiceMonitor only where the cluster serves its API.
    monitors = of_kind(rendered["monitoring"], "ServiceMonitor")
    check(len(monitors) == 1, f"monitoring: {len(monitors)} ServiceMonitors with {MONITORING_API}")
    without, notes = render(chart, cases["monitoring"], "1.33.0")
    check(not of_kind(without, "ServiceMonitor"), "monitoring: a ServiceMonitor without the API")
    check("no ServiceMonitor was created" in notes, "monitoring: NOTES do not say the ServiceMonitor is missing")
    print(f"ServiceMonitor: rendered with {MONITORING_API}, left out (and said so in NOTES) without it")

    # A changed price list rolls the pod.
    def checksum(documents):
        (statefulset,) = of_kind(documents, "StatefulSet")
        return statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/price-list"]
    check(checksum(rendered["default"]) != checksum(rendered["production"]), "the price-list checksum does not change")
    (prices,) = of_kind(rendered["production"], "ConfigMap")
    if arguments.price_list_out:
        arguments.price_list_out.write_text(prices["data"]["price-list.toml"])

    # The example workload, with the collector as a native sidecar and as a plain container.
    with tempfile.TemporaryDirectory() as scratch:
        copy = pathlib.Path(scratch) / "helm"
        shutil.copytree(ROOT / "helm", copy, ignore=shutil.ignore_patterns("charts"))
        example_dir = copy / "examples" / "agent-gateway"
        helm.dependency_build(example_dir)
        example = helm.Chart.load(example_dir)
        sidecar_cases = {"sidecar": {}}
        for path in sorted((EXAMPLE / "ci").glob("*-values.yaml")):
            sidecar_cases["sidecar-" + path.name.removesuffix("-values.yaml")] = values_file(path)
        for case, values in sidecar_cases.items():
            lint(example_dir, case, values)
            for kube in KUBERNETES:
                documents, _ = render(example, values, kube, release="gateway")
                validate(case, documents, kube, summary)
            check(not of_kind(documents, "StatefulSet"), f"{case}: server.enabled false still renders the server")
            containers += restricted(case, documents)
            native = values.get("licensing", {}).get("collector", {}).get("native", True)
            spool, collector = collector_promises(case, documents, native)
            if collector:
                command_lines["collector"][case] = collector["command"] + collector["args"]
            if case == "sidecar-fallback":
                check(spool and "persistentVolumeClaim" in spool, f"{case}: spoolClaim is not a volume claim")
            elif spool is not None:
                check("emptyDir" in spool, f"{case}: the default spool is not an emptyDir")
        print("collector: a native sidecar (initContainers, restartPolicy: Always) and a plain container")

    print(f"restricted Pod Security fields: on all {containers} containers rendered")
    for kube in KUBERNETES:
        entry = summary[kube]
        skipped = ", ".join(sorted(entry["skipped"])) or "none"
        print(f"kubernetes-validate --strict {kube}: {entry['valid']} manifests valid "
              f"({len(entry['cases'])} values sets); custom resources skipped: {skipped}")

    # What must be refused, naming the key.
    refused(chart, {"replicas": 2}, ["/replicas", "one process per database"])
    refused(chart, {"replicaz": 1}, ["additional properties 'replicaz' not allowed"])
    refused(chart, {"persistence": {"sise": "20Gi"}}, ["/persistence", "'sise'"])
    refused(chart, {"service": {"port": "50051"}}, ["/service/port", "want integer"])
    refused(chart, {"log": {"format": "xml"}}, ["/log/format"])
    refused(chart, {"terminationGracePeriodSeconds": 5}, ["terminationGracePeriodSeconds (5)", "shutdownGraceSeconds (10)"])
    refused(chart, {"auth": {"apiKeys": {"existingSecret": ""}}}, ["no credentials", "auth.insecure"])
    # Native sidecars need 1.29: `helm install` checks the cluster against this.
    check(chart.metadata["kubeVersion"] == ">=1.29.0-0", f"kubeVersion {chart.metadata['kubeVersion']}")

    if arguments.args_out:
        arguments.args_out.write_text(json.dumps(command_lines, indent=2))

    if failures:
        print(f"\n{len(failures)} checks FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("\nall chart checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
