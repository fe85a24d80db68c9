"""The chart lints, renders every scenario, and the manifests match the published schemas."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from builders import names

CUSTOM_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/", "cert-manager.io/")
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "HTTPRoute", "GRPCRoute"}


def triton_container(deployment: dict) -> dict:
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"
    ]
    return container


def args_of(deployment: dict) -> list[str]:
    return triton_container(deployment)["args"]


def test_lint_strict_default_values(run_helm, chart):
    result = run_helm("lint", "--strict", str(chart))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_lint_strict(run_helm, chart, scenario):
    result = run_helm(
        "lint", "--strict", str(chart), "-f", str(chart / "ci" / f"{scenario}-values.yaml")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_manifests_validate_strictly(render, scenario, kube_version):
    """kubernetes-validate --strict: unknown fields and wrong types fail."""
    docs = render(scenario)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} ({kube_version}): {err.message}")
        checked += 1
    assert checked >= 4  # ServiceAccount, Services, Deployment, PDB, test Pod


def test_custom_resources_match_published_crd_schemas(render, validate_custom_resources):
    custom = [
        doc
        for scenario in ("hpa", "canary")
        for doc in render(scenario)
        if doc["apiVersion"].startswith(CUSTOM_GROUPS)
    ]
    assert {doc["kind"] for doc in custom} == CUSTOM_KINDS
    results = validate_custom_resources(custom)
    errors = [f"{r['kind']}/{r['name']}: {r['errors']}" for r in results if r["errors"]]
    assert not errors, "\n".join(errors)


def test_crd_validators_reject_invalid_resources(render, validate_custom_resources, select):
    """The validators do fail: a negative route weight and a numeric scrape interval."""
    route = json.loads(json.dumps(select(render("canary"), "HTTPRoute")[0]))
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    monitor = json.loads(json.dumps(select(render("hpa"), "ServiceMonitor")[0]))
    monitor["spec"]["endpoints"][0]["interval"] = 15
    results = validate_custom_resources([route, monitor])
    assert "weight must be >= 0" in " ".join(results[0]["errors"])
    assert "interval must be string" in " ".join(results[1]["errors"])


# -- bad values are rejected by values.schema.json with a readable message -------------


def test_negative_replica_count_is_rejected(render_error):
    error = render_error(None, "replicaCount=-1")
    assert "replicaCount: Must be greater than or equal to 0" in error


def test_unknown_key_is_rejected(render_error):
    error = render_error(None, 'modelRepository.s3.bukket="shop-models"')
    assert "modelRepository.s3: Additional property bukket is not allowed" in error


def test_s3_source_without_bucket_is_rejected(render_error):
    error = render_error(None, 'modelRepository.source="s3"')
    assert "modelRepository.s3.bucket: String length must be greater than or equal to 1" in error


def test_canary_and_sync_sources_need_their_bucket(render_error):
    error = render_error(None, "canary.enabled=true", 'canary.modelRepository={"source": "gcs"}')
    assert "modelRepository with canary.modelRepository: source gcs needs gcs.bucket" in error
    error = render_error(None, 'modelRepository.source="sync"')
    assert "modelRepository: source sync needs s3.bucket" in error


def test_restricted_api_without_secret_is_rejected(render_error):
    error = render_error("restricted", 'restrictedApi.secretName=""')
    assert "restrictedApi.secretName: String length must be greater than or equal to 1" in error


def test_grace_period_too_short_for_prestop_is_rejected(render_error):
    error = render_error(None, "terminationGracePeriodSeconds=12", "preStopSleepSeconds=10")
    assert "must exceed preStopSleepSeconds (10) by more than 5 seconds" in error


# -- what every scenario's Deployment must carry ------------------------------------------


def test_deployment_basics(render, select, scenario):
    for deployment in select(render(scenario), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = triton_container(deployment)
        args = container["args"]
        grace = pod["terminationGracePeriodSeconds"]
        sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert f"--exit-timeout-secs={grace - sleep - 5}" in args
        assert "--strict-readiness=true" in args
        assert any(a.startswith("--model-control-mode=") for a in args)
        assert container["image"].startswith("nvcr.io/nvidia/tritonserver:24.10-py3")
        probes = {k: container[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe")}
        assert probes == {"startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
        assert container["readinessProbe"]["httpGet"]["path"].startswith("/v2/")
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/dev/shm"} <= mounts
        assert set(container["resources"]["requests"]) >= {"cpu", "memory"}


# -- each scenario does what it is named for --------------------------------------------


def test_cpu_scenario_has_no_gpu(render, select):
    (deployment,) = select(render("cpu"), "Deployment")
    assert "nvidia.com/gpu" not in triton_container(deployment)["resources"].get("limits", {})
    assert "--allow-gpu-metrics=false" in args_of(deployment)
    assert "--model-repository=/models" in args_of(deployment)


def test_gpu_scenario_requests_a_gpu_and_spreads(render, select):
    (deployment,) = select(render("gpu"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert triton_container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--allow-gpu-metrics=true" in args_of(deployment)
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nodeAffinity" in pod["affinity"]
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"]["track"] == "stable"
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"


def test_hpa_scenario_scales_on_the_recorded_ratio(render, select):
    docs = render("hpa")
    (hpa,) = select(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-triton-ecommerce"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "triton_queue_compute_ratio"
    (deployment,) = select(docs, "Deployment")
    assert "replicas" not in deployment["spec"]
    (rule,) = select(docs, "PrometheusRule")
    records = [r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert "triton:queue_compute:ratio" in records
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"TritonQueueTimeHigh", "TritonErrorRateHigh", "TritonModelNotLoaded"} <= alerts
    assert select(docs, "ServiceMonitor") and select(docs, "PodDisruptionBudget")


def test_dashboard_has_a_per_stage_latency_panel(render, select):
    (configmap,) = select(render("hpa"), "ConfigMap", "rel-triton-ecommerce-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["triton-ecommerce.json"])
    stage_panels = [p for p in dashboard["panels"] if "stage" in p["title"].lower()]
    assert stage_panels
    exprs = [t["expr"] for p in stage_panels for t in p["targets"]]
    assert any(
        "sum by (model)" in e and "nv_inference_compute_infer_duration_us" in e for e in exprs
    )
    assert all('model=~"$stage"' in e for e in exprs)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # The stage regex lists the stage models (with those each release composes), the model
    # variable the pipelines.
    pipelines = {names.SEARCH, names.RECOMMEND}
    stages = (set(names.ALL_MODELS) | set(names.COMPOSED_STAGES)) - pipelines
    stage = variables["stage"]
    assert set(stage["query"].split("|")) == stages
    assert stage["current"]["value"] == stage["query"]
    pipeline_query = variables["model"]["query"]["query"]
    assert 'model=~"(search|recommend)(_v[0-9]+)?"' in pipeline_query
    pipeline_exprs = [
        t["expr"] for p in dashboard["panels"] if p not in stage_panels for t in p["targets"]
    ]
    assert any('model=~"$model"' in e for e in pipeline_exprs)


def test_canary_scenario_splits_traffic_by_weight(render, select):
    docs = render("canary")
    names = sorted(d["metadata"]["name"] for d in select(docs, "Deployment"))
    assert names == ["rel-triton-ecommerce", "rel-triton-ecommerce-canary"]
    stable, canary = (select(docs, "Deployment", name)[0] for name in names)
    assert stable["spec"]["selector"]["matchLabels"]["track"] == "stable"
    assert canary["spec"]["selector"]["matchLabels"]["track"] == "canary"
    assert "--model-repository=s3://shop-models/releases/2024-06-01" in args_of(stable)
    assert "--model-repository=s3://shop-models/releases/2024-06-08" in args_of(canary)
    for kind, port in (("HTTPRoute", 8000), ("GRPCRoute", 8001)):
        (route,) = select(docs, kind)
        refs = route["spec"]["rules"][0]["backendRefs"]
        assert [(r["name"], r["port"], r["weight"]) for r in refs] == [
            ("rel-triton-ecommerce", port, 90),
            ("rel-triton-ecommerce-canary", port, 10),
        ]
    services = {s["metadata"]["name"]: s for s in select(docs, "Service")}
    assert services["rel-triton-ecommerce-canary-grpc"]["spec"]["clusterIP"] == "None"
    (monitor,) = select(docs, "PodMonitor")
    assert monitor["spec"]["podTargetLabels"] == ["track"]


def test_s3_scenario_uses_triton_native_s3_with_secret(render, select):
    docs = render("s3")
    (deployment,) = select(docs, "Deployment")
    container = triton_container(deployment)
    assert (
        "--model-repository=s3://http://minio.storage.svc:9000/shop-models/releases/2024-06-01"
        in container["args"]
    )
    assert container["envFrom"] == [{"secretRef": {"name": "triton-s3-credentials"}}]
    assert not any("AWS_SECRET" in (e.get("value") or "") for e in container["env"])
    (policy,) = select(docs, "NetworkPolicy")
    assert any(9000 in [p["port"] for p in rule["ports"]] for rule in policy["spec"]["egress"])


def test_gcs_scenario_mounts_the_key_file(render, select):
    (deployment,) = select(render("gcs"), "Deployment")
    container = triton_container(deployment)
    assert "--model-repository=gs://shop-models/releases/2024-06-01" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/gcs/key.json"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "gcs-credentials", "secret": {"secretName": "triton-gcs-key"}} in volumes


def test_pvc_scenario_mounts_the_claim_read_only(render, select):
    (deployment,) = select(render("pvc"), "Deployment")
    container = triton_container(deployment)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount == {
        "name": "models",
        "mountPath": "/models",
        "readOnly": True,
        "subPath": "releases/2024-06-01",
    }
    assert "--model-control-mode=poll" in container["args"]
    assert "--repository-poll-secs=30" in container["args"]


def test_sync_scenario_copies_the_bucket_first(render, select):
    (deployment,) = select(render("sync"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:5] == [
        "aws",
        "s3",
        "sync",
        "s3://shop-models/releases/2024-06-01",
        "/models",
    ]
    assert init["envFrom"] == [{"secretRef": {"name": "triton-s3-credentials"}}]
    models = [v for v in pod["volumes"] if v["name"] == "models"][0]
    assert models["emptyDir"]["sizeLimit"] == "30Gi"


def test_restricted_scenario_takes_the_key_from_a_secret(render, select):
    docs = render("restricted")
    (deployment,) = select(docs, "Deployment")
    container = triton_container(deployment)
    expected = (
        "model-repository,shared-memory,model-config:triton-admin-key=$(TRITON_RESTRICTED_API_KEY)"
    )
    assert f"--http-restricted-api={expected}" in container["args"]
    assert f"--grpc-restricted-protocol={expected}" in container["args"]
    (key,) = [e for e in container["env"] if e["name"] == "TRITON_RESTRICTED_API_KEY"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "triton-admin", "key": "admin-key"}}
    (policy,) = select(docs, "NetworkPolicy")
    test_pod = {"app.kubernetes.io/instance": "rel", "app.kubernetes.io/component": "test"}
    assert {"podSelector": {"matchLabels": test_pod}} in policy["spec"]["ingress"][0]["from"]


def test_helm_test_pod_calls_search(render, select):
    (pod,) = select(render("cpu"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    body = json.loads(container["env"][0]["value"])
    assert body["inputs"][0] == {
        "name": "query",
        "datatype": "BYTES",
        "shape": [1, 1],
        "data": ["red running shoes"],
    }
    assert body["inputs"][1]["name"] == "k" and body["inputs"][1]["datatype"] == "INT32"
    script = container["args"][0]
    assert "/v2/health/ready" in script and "/v2/models/search/infer" in script


def test_helm_test_pod_matches_the_search_pipeline_contract(render, select):
    """The test call sends what `search` takes (builders.names.SEARCH_INPUTS) and asks for
    all it returns."""
    (pod,) = select(render("cpu"), "Pod")
    (container,) = pod["spec"]["containers"]
    body = json.loads(container["env"][0]["value"])
    assert f"/v2/models/{names.SEARCH}/infer" in container["args"][0]
    inputs = {tensor.name: tensor for tensor in names.SEARCH_INPUTS}
    for sent in body["inputs"]:
        tensor = inputs[sent["name"]]
        datatype = "BYTES" if tensor.data_type == "STRING" else tensor.data_type
        assert sent["datatype"] == datatype
        # The pipelines batch: one request of batch 1 ahead of the model's dims.
        assert sent["shape"] == [1, *tensor.dims]
    required = {tensor.name for tensor in names.SEARCH_INPUTS if not tensor.optional}
    assert required <= {sent["name"] for sent in body["inputs"]}
    assert [o["name"] for o in body["outputs"]] == [t.name for t in names.PIPELINE_OUTPUTS]
    for tensor in names.PIPELINE_OUTPUTS:
        assert f'"name":"{tensor.name}"' in container["args"][0]
