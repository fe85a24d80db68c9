"""The chart's TLS scenarios: Secret, cert-manager Certificates and Gateway routes render as
meant and match their published schemas, and the rendered tritonserver flags serve the
search contract over (mutual) TLS on the real local tritonserver."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clients import Client, TlsConfig, TlsError
from server import TritonServer
from server.tls import dev_certificates

K8S = Path(__file__).resolve().parents[2] / "k8s"
MOUNT = "/etc/triton/tls"
TLS_FLAGS = ("--grpc-use-ssl", "--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert")


def triton(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def tls_flags(deployment: dict) -> list[str]:
    return [a for a in triton(deployment)["args"] if a.split("=", 1)[0].startswith(TLS_FLAGS)]


def test_tls_scenario_serves_grpc_over_tls_from_the_secret(render, select):
    docs = render("tls")
    (deployment,) = select(docs, "Deployment")
    assert tls_flags(deployment) == [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={MOUNT}/tls.crt",
        f"--grpc-server-key={MOUNT}/tls.key",
    ]
    (mount,) = [m for m in triton(deployment)["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": MOUNT, "readOnly": True}
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"] == {"secretName": "triton-grpc-tls", "defaultMode": 0o440}
    # Probes stay on plain HTTP; gRPC leaves through a passthrough TLSRoute, not a GRPCRoute.
    assert triton(deployment)["readinessProbe"]["httpGet"]["port"] == "http"
    assert not select(docs, "GRPCRoute") and not select(docs, "Certificate")
    (route,) = select(docs, "TLSRoute")
    assert route["spec"]["hostnames"] == ["grpc.search.shop.internal"]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "rel-triton-ecommerce", "port": 8001, "weight": 100}
    ]
    for service in select(docs, "Service"):
        (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert "appProtocol" not in grpc  # not h2c: the port speaks TLS


def test_mtls_scenario_demands_client_certificates_on_both_tracks(render, select):
    docs = render("mtls")
    deployments = select(docs, "Deployment")
    assert len(deployments) == 2
    for deployment in deployments:
        assert tls_flags(deployment)[-2:] == [
            f"--grpc-root-cert={MOUNT}/ca.crt",
            "--grpc-use-ssl-mutual=true",
        ]
    (route,) = select(docs, "TLSRoute")
    weights = [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [("rel-triton-ecommerce", 90), ("rel-triton-ecommerce-canary", 10)]
    (server,) = select(docs, "Certificate", "rel-triton-ecommerce-server")
    spec = server["spec"]
    assert spec["secretName"] == "triton-mtls" and spec["issuerRef"]["name"] == "shop-ca"
    for name in (
        "rel-triton-ecommerce-grpc.shop.svc",
        "rel-triton-ecommerce-canary-grpc.shop.svc.cluster.local",
        "grpc.search.shop.internal",
        "search-grpc.shop.example.com",
    ):
        assert name in spec["dnsNames"]
    assert "server auth" in spec["usages"]
    (client,) = select(docs, "Certificate", "rel-triton-ecommerce-client")
    assert client["spec"]["secretName"] == "triton-mtls-client"
    assert "client auth" in client["spec"]["usages"]


def test_tls_resources_match_published_crd_schemas(render, validate_custom_resources):
    custom = [
        doc
        for scenario in ("tls", "mtls")
        for doc in render(scenario)
        if doc["apiVersion"].startswith(("cert-manager.io/", "gateway.networking.k8s.io/"))
    ]
    custom.append(yaml.safe_load((K8S / "gateway" / "gateway-tls.yaml").read_text()))
    results = validate_custom_resources(custom)
    assert sorted({r["kind"] for r in results}) == [
        "Certificate",
        "Gateway",
        "HTTPRoute",
        "TLSRoute",
    ]
    errors = [f"{r['kind']}/{r['name']}: {r['errors']}" for r in results if r["errors"]]
    assert not errors, "\n".join(errors)


def test_crd_validators_reject_a_bad_certificate(render, select, validate_custom_resources):
    certificate = dict(select(render("mtls"), "Certificate")[0])
    certificate["spec"] = {**certificate["spec"], "usages": ["server-auth"]}
    (result,) = validate_custom_resources([certificate])
    assert "must be equal to one of the allowed values" in " ".join(result["errors"])


def test_tls_values_are_checked(render_error):
    error = render_error(None, "tls.enabled=true")
    assert "tls.secretName: String length must be greater than or equal to 1" in error
    error = render_error("tls", "tls.certManager.enabled=true")
    assert "tls.certManager.issuerRef.name: String length must be greater than or equal to 1" in (
        error
    )
    error = render_error("tls", "gateway.http.enabled=false", "gateway.grpc.hostnames=[]")
    assert "routes gRPC by SNI: set gateway.grpc.hostnames" in error


@pytest.mark.parametrize("tls_scenario", ["tls", "mtls"])
def test_rendered_tls_flags_serve_search_over_tls(
    render, select, search_model, tmp_path, tls_scenario
):
    """The scenario's flags, pointed at throwaway certificates, start the real tritonserver;
    the search contract answers a client holding what the scenario asks for, and only it."""
    certs = dev_certificates(tmp_path / "certs")
    files = {"tls.crt": certs.server_cert, "tls.key": certs.server_key, "ca.crt": certs.ca}
    deployment = select(render(tls_scenario), "Deployment")[0]
    flags = []
    for arg in tls_flags(deployment):
        for name, path in files.items():
            arg = arg.replace(f"{MOUNT}/{name}", str(path))
        flags.append(arg)
    repo = search_model(tmp_path / "repo")
    mutual = tls_scenario == "mtls"
    member = TlsConfig(certs.ca, certs.client_cert, certs.client_key)
    with TritonServer(repo, extra_args=flags, exit_timeout_secs=2) as server:
        with Client(server.grpc_url, tls=member if mutual else TlsConfig(certs.ca)) as client:
            result = client.search("red running shoes", k=3)
        assert len(result.items) == 3
        if mutual:
            with (
                Client(server.grpc_url, tls=TlsConfig(certs.ca)) as client,
                pytest.raises(TlsError, match="requires mutual TLS"),
            ):
                client.search("red running shoes", k=3)
