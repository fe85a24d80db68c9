"""The PrometheusRule's PromQL is checked and unit-tested with the real promtool, and the
prometheus-adapter rules serve exactly the series the chart records and the HPA reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
POD = "rel-triton-ecommerce-5d8f7c9b4-abcde"
CANARY_POD = "rel-triton-ecommerce-canary-6c7d8f9b5-xyz12"
RATIO_LABELS = f'triton:queue_compute:ratio{{namespace="shop",pod="{POD}"}}'


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install the Debian package `prometheus`")
    return path


@pytest.fixture(scope="module")
def rules_file(render, select, tmp_path_factory) -> Path:
    (rule,) = select(render("hpa"), "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_rules_pass_promtool_check(promtool, rules_file):
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def series(name: str, values: str, **labels: str) -> dict:
    base = {"namespace": "shop", "pod": POD, "track": "stable", "model": "search", "version": "1"}
    base.update(labels)
    text = ",".join(f'{key}="{value}"' for key, value in base.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def test_rules_compute_the_ratio_and_fire_the_alerts(promtool, rules_file, tmp_path):
    """Synthetic Triton series: queue time 6x compute, 1 failure in 11, a pod not ready."""
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 60 s of queueing and 10 s of compute per minute; 100 requests a minute.
                    series("nv_inference_queue_duration_us", "0+60000000x20"),
                    series("nv_inference_compute_infer_duration_us", "0+10000000x20"),
                    series("nv_inference_request_success", "0+100x20"),
                    series("nv_inference_request_failure", "0+10x20", reason="BACKEND"),
                    series("nv_inference_request_failure", "0+0x20", reason="REJECTED"),
                    {
                        "series": f'kube_pod_status_ready{{namespace="shop",pod="{CANARY_POD}",'
                        'condition="false"}',
                        "values": "1x20",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "triton:queue_compute:ratio",
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": RATIO_LABELS,
                                "value": 6,
                            }
                        ],
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "TritonQueueTimeHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "shop",
                                    "track": "stable",
                                    "model": "search",
                                },
                                "exp_annotations": {
                                    "summary": "Triton requests of search (stable) wait 600 ms "
                                    "in the queue",
                                    "description": "Average queue time is above 50 ms: add "
                                    "replicas (check the HPA) or tune dynamic batching and "
                                    "instance counts.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "TritonErrorRateHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "shop",
                                    "track": "stable",
                                    "model": "search",
                                },
                                "exp_annotations": {
                                    "summary": "9.091% of search (stable) requests fail",
                                    "description": "nv_inference_request_failure counts by reason "
                                    "(BACKEND, REJECTED, CANCELED, OTHER): check the failing stage "
                                    "in the dashboard's per-stage panels and the pod logs.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "TritonPodNotReady",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "shop",
                                    "pod": CANARY_POD,
                                },
                                "exp_annotations": {
                                    "summary": f"Triton pod {CANARY_POD} is not ready",
                                    "description": "With --strict-readiness a pod is ready only "
                                    "when every model is: a model failed to load or was unloaded. "
                                    "Check the repository index (POST /v2/repository/index) and "
                                    "the pod log.",
                                },
                            }
                        ],
                    },
                    # `search` reports metrics; `recommend` (also expected in ci/hpa) does not.
                    {
                        "eval_time": "10m",
                        "alertname": "TritonModelNotLoaded",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "model": "recommend",
                                    "namespace": "shop",
                                },
                                "exp_annotations": {
                                    "summary": "Model recommend is not loaded on any pod of "
                                    "rel-triton-ecommerce",
                                    "description": "Triton exports a model's metrics once it is "
                                    "loaded. Check the model repository location and the load "
                                    "errors in the pod log.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shedding_is_recorded_and_alerts_when_it_lasts(promtool, rules_file, tmp_path):
    """A stage whose queue sheds 5 of every 100 requests (reason REJECTED), and one
    that sheds none: the rate is recorded for both, the alert fires for the first only."""
    shed = {"model": "text_encoder"}
    calm = {"model": "top_k"}
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("nv_inference_request_success", "0+5700x20", **shed),
                    series("nv_inference_request_failure", "0+300x20", reason="REJECTED", **shed),
                    series("nv_inference_request_success", "0+6000x20", **calm),
                    series("nv_inference_request_failure", "0+0x20", reason="REJECTED", **calm),
                ],
                "promql_expr_test": [
                    {
                        "expr": "triton:queue_rejections:rate",
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": 'triton:queue_rejections:rate{namespace="shop",'
                                'track="stable",model="text_encoder"}',
                                "value": 5,
                            },
                            {
                                "labels": 'triton:queue_rejections:rate{namespace="shop",'
                                'track="stable",model="top_k"}',
                                "value": 0,
                            },
                        ],
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "TritonShedding",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "shop",
                                    "track": "stable",
                                    "model": "text_encoder",
                                },
                                "exp_annotations": {
                                    "summary": "5% of text_encoder (stable) requests are "
                                    "shed at its queue",
                                    "description": "The stage's bounded queue rejects requests "
                                    "that could not finish within the 100 ms SLO (UNAVAILABLE, "
                                    "HTTP 503; clients retry them). Shedding during a spike is "
                                    "expected while the HPA adds pods; sustained shedding means "
                                    "too few pods: check the HPA (at maxReplicas?) and the "
                                    "queue-to-compute ratio.",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_adapter_serves_the_hpa_metric(render, select, chart):
    adapter = yaml.safe_load((REPO_ROOT / "k8s" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    (prometheus_rule,) = select(render("hpa"), "PrometheusRule")
    records = {
        r["record"] for g in prometheus_rule["spec"]["groups"] for r in g["rules"] if "record" in r
    }
    series_name = rule["seriesQuery"].split("{")[0]
    assert series_name in records
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    (hpa,) = select(render("hpa"), "HorizontalPodAutoscaler")
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
