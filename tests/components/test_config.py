"""Stack configuration: defaults, typed settings, and one clear error listing every problem."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pytest

from components import versions
from components.config import ConfigError, parse_config
from model_pipeline.syntax import quantity_value
from offline.harness import run_program, stack_config

REPO = {"modelRepository": {"uri": "s3://models/triton"}}


def _parse(**sections: Any) -> Any:
    return parse_config("test", {**REPO, **sections})


def _problems(values: dict[str, Any], secrets: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config("test", values, secrets)
    return raised.value.problems


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = _parse()
    assert cfg.triton.image == versions.TRITON_IMAGE
    assert cfg.triton.replicas == 1
    assert cfg.gpu.sharing == "whole" and not cfg.gpu.uses_hami
    assert [m.name for m in cfg.models] == ["mnist"]
    assert cfg.models[0].batch().as_list() == [1, 4, 8]  # the built-in's own profile
    assert cfg.model_repository.triton_uri == "s3://models/triton"


def test_numbers_and_booleans_given_as_strings_are_accepted() -> None:
    cfg = _parse(triton={"replicas": "3"}, gpu={"driver": "false"})
    assert cfg.triton.replicas == 3 and cfg.gpu.driver is False


def test_resnet50_gets_its_own_default_profile() -> None:
    cfg = _parse(models=[{"name": "resnet50", "backend": "tensorrt"}])
    model = cfg.models[0]
    assert (model.builtin, model.backend, model.batch().as_list()) == ("resnet50", "tensorrt", [1, 8, 16])
    assert (model.max_queue_delay_us, model.effective_precision) == (500, "fp16")


@pytest.mark.parametrize(
    ("endpoint", "uri"),
    [
        ("http://minio.minio.svc:9000", "s3://minio.minio.svc:9000/models/triton"),
        ("https://minio.example.com:443", "s3://https://minio.example.com:443/models/triton"),
    ],
)
def test_custom_endpoints_are_written_in_tritons_own_uri_syntax(endpoint: str, uri: str) -> None:
    cfg = parse_config(
        "test",
        {
            "modelRepository": {
                "uri": "s3://models/triton",
                "endpoint": endpoint,
                "publishEndpoint": "http://127.0.0.1:9000",
            }
        },
    )
    assert cfg.model_repository.triton_uri == uri  # the cluster's name for the store, never the publisher's


# Each case: (config values, a fragment the single error must contain). Together they cover wrong types, bad
# choices, ranges, malformed URIs and images, typo'd keys and cross-key rules.
BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("replicas not a number", {"triton": {"replicas": "two"}}, "triton.replicas ('two') must be an integer"),
    ("replicas zero", {"triton": {"replicas": 0}}, "triton.replicas (0) must be between 1 and 64"),
    ("replicas too many", {"triton": {"replicas": 500}}, "triton.replicas (500) must be between 1 and 64"),
    ("replicas a boolean", {"triton": {"replicas": True}}, "triton.replicas (True) must be an integer"),
    ("image latest", {"triton": {"image": "nvcr.io/nvidia/tritonserver:latest"}}, "must not use the 'latest' tag"),
    ("image untagged", {"triton": {"image": "nvcr.io/nvidia/tritonserver"}}, "must carry an explicit version tag"),
    ("image malformed", {"triton": {"image": "Not An Image"}}, "triton.image ('Not An Image') must be an image"),
    ("typo in triton key", {"triton": {"replcias": 2}}, "triton.replcias is not a known key; did you mean 'replicas'?"),
    (
        "typo in top-level key",
        {"trition": {}},
        "inference-platform:trition is not a known configuration key; did you mean 'triton'?",
    ),
    ("unknown sharing mode", {"gpu": {"sharing": "timeslice"}}, "gpu.sharing ('timeslice') must be one of whole, hami"),
    (
        "unknown MIG strategy",
        {"gpu": {"migStrategy": "all"}},
        "gpu.migStrategy ('all') must be one of none, single, mixed",
    ),
    ("driver not a boolean", {"gpu": {"driver": "yes"}}, "gpu.driver ('yes') must be true or false"),
    (
        "gpu nodes by name",
        {"gpu": {"gpuNodes": ["ip-10-0-1-7"]}},
        "gpu.gpuNodes (['ip-10-0-1-7']) is no longer read: GPU nodes are selected by gpu.nodeSelector",
    ),
    (
        "hami without its node label",
        {"gpu": {"sharing": "hami", "nodeSelector": {"pool": "gpu"}}},
        "gpu.nodeSelector ({'pool': 'gpu'}) must include gpu: \"on\" when sharing is hami",
    ),
    ("hami share without hami", {"gpu": {"hami": {"gpuCoresPercent": 30}}}, "only apply when gpu.sharing is hami"),
    (
        "hami cores out of range",
        {"gpu": {"sharing": "hami", "hami": {"gpuCoresPercent": 150}}},
        "gpu.hami.gpuCoresPercent (150) must be between 1 and 100",
    ),
    (
        "hami memory two ways",
        {"gpu": {"sharing": "hami", "hami": {"gpuMemoryMiB": 4000, "gpuMemoryPercent": 50}}},
        "cannot be set together with gpuMemoryMiB",
    ),
    (
        "hami needs guaranteed QoS",
        {"gpu": {"sharing": "hami"}},
        "triton.cpuRequest ('2') must equal triton.cpuLimit ('4') when gpu.sharing is hami",
    ),
    ("tolerations not a list", {"gpu": {"tolerations": "nvidia"}}, "gpu.tolerations ('nvidia') must be a list"),
    (
        "toleration operator",
        {"gpu": {"tolerations": [{"key": "k", "operator": "In"}]}},
        "gpu.tolerations[0].operator ('In') must be Equal or Exists",
    ),
    (
        "toleration effect misspelt",
        {"gpu": {"tolerations": [{"key": "k", "operator": "Exists"}, {"key": "k", "effect": "NoExecut"}]}},
        "gpu.tolerations[1].effect ('NoExecut') must be NoSchedule, PreferNoSchedule or NoExecute",
    ),
    (
        "client namespace not a namespace name",
        {"triton": {"clientNamespaces": ["apps", "Batch_Jobs"]}},
        "triton.clientNamespaces[1] ('Batch_Jobs') must be a namespace name",
    ),
    (
        "node selector values",
        {"gpu": {"nodeSelector": {"pool": 3}}},
        "gpu.nodeSelector ({'pool': 3}) must be an object of string values",
    ),
    ("cpu not a quantity", {"triton": {"cpuLimit": "four"}}, "triton.cpuLimit ('four') must be a Kubernetes quantity"),
    (
        "request above limit",
        {"triton": {"memoryRequest": "16Gi", "memoryLimit": "8Gi"}},
        "triton.memoryRequest ('16Gi') must not exceed triton.memoryLimit (8Gi)",
    ),
    (
        "startup budget too short",
        {"triton": {"startupBudgetSeconds": 5}},
        "triton.startupBudgetSeconds (5) must be between 30 and 7200",
    ),
    (
        "poll mode refused",
        {"triton": {"modelControlMode": "poll"}},
        "triton.modelControlMode ('poll') must be one of none, explicit",
    ),
    (
        "namespace not a DNS label",
        {"triton": {"namespace": "Triton_NS"}},
        "triton.namespace ('Triton_NS') must be a DNS label",
    ),
    ("section not an object", {"triton": ["replicas", 2]}, "triton (['replicas', 2]) must be an object"),
    (
        "uri not s3",
        {"modelRepository": {"uri": "gs://models/x"}},
        "modelRepository.uri ('gs://models/x') must be an S3 URI",
    ),
    ("bucket name invalid", {"modelRepository": {"uri": "s3://Models_Bucket/x"}}, "must name a valid bucket"),
    ("uri missing", {"modelRepository": {}}, "modelRepository.uri (None) is required"),
    (
        "endpoint without port",
        {"modelRepository": {"uri": "s3://models/x", "endpoint": "http://minio"}},
        "modelRepository.endpoint ('http://minio') must be http(s)://host:port",
    ),
    (
        "cluster-local endpoint, nothing to publish through",
        {"modelRepository": {"uri": "s3://models/x", "endpoint": "http://minio.minio.svc.cluster.local:9000"}},
        "modelRepository.endpoint ('http://minio.minio.svc.cluster.local:9000') resolves only inside the cluster, and "
        "`pulumi up` publishes from outside it: set modelRepository.publishEndpoint",
    ),
    (
        "publish endpoint for AWS S3",
        {"modelRepository": {"uri": "s3://models/x", "publishEndpoint": "http://127.0.0.1:9000"}},
        "modelRepository.publishEndpoint ('http://127.0.0.1:9000') needs modelRepository.endpoint",
    ),
    ("bad region", {"modelRepository": {"uri": "s3://models/x", "region": "Europe"}}, "must be an AWS region"),
    (
        "bad role arn",
        {"modelRepository": {"uri": "s3://models/x", "irsaRoleArn": "triton-reader"}},
        "modelRepository.irsaRoleArn ('triton-reader') must be an IAM role ARN",
    ),
    ("models empty", {"models": []}, "models ([]) must be a non-empty list of models"),
    (
        "model neither built-in nor brought",
        {"models": [{"name": "bert"}]},
        "models[bert].source (None) is required for model 'bert': it is not a built-in (mnist, resnet50)",
    ),
    (
        "model unknown backend",
        {"models": [{"name": "mnist", "backend": "tflite"}]},
        "models[mnist].backend ('tflite') must be one of onnxruntime, tensorrt",
    ),
    (
        "model profile order",
        {"models": [{"name": "mnist", "batch": {"min": 4, "opt": 2, "max": 8}}]},
        "models[mnist].batch ({'min': 4, 'opt': 2, 'max': 8}) must satisfy min <= opt <= max",
    ),
    (
        "model duplicated",
        {"models": [{"name": "mnist"}, {"name": "mnist"}]},
        "models ('mnist') is listed more than once",
    ),
    (
        "model name invalid",
        {"models": [{"name": "My Model", "architecture": "resnet50"}]},
        "models[0].name ('My Model') must be a lower-case model name",
    ),
    ("secret key in plain config", {"s3SecretAccessKey": "hunter2"}, "s3SecretAccessKey must be set as a secret"),
    (
        "kubernetes version malformed",
        {"kubernetes": {"version": "1.31"}},
        "kubernetes.version ('1.31') must be the control plane's version",
    ),
    (
        "namespaces collide",
        {"monitoring": {"namespace": "triton"}},
        "monitoring.namespace ('triton') must differ from triton.namespace",
    ),
]


@pytest.mark.parametrize(("values", "fragment"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_reported_with_key_value_and_what_is_allowed(values: dict[str, Any], fragment: str) -> None:
    problems = _problems({**REPO, **values})
    assert any(fragment in p for p in problems), problems


def test_there_are_at_least_25_distinct_bad_inputs() -> None:
    assert len({fragment for _, _, fragment in BAD_INPUTS}) >= 25


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "triton": {"replicas": 0, "image": "x:latest"},
            "gpu": {"sharing": "nope"},
            "modelRepository": {"uri": "http://x"},
        }
    )
    assert len(problems) == 4
    assert "4 problem(s)" in str(ConfigError(problems))


@pytest.fixture
def secret() -> Iterator[Callable[[str], pulumi.Output[str]]]:
    """Pulumi secrets as get_secret returns them; Outputs need an event loop of their own."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield pulumi.Output.secret
    loop.close()
    asyncio.set_event_loop(None)


def test_static_keys_must_come_in_pairs(secret: Callable[[str], pulumi.Output[str]]) -> None:
    problems = _problems(REPO, {"s3AccessKeyId": secret("AKIA")})
    assert problems == ["s3AccessKeyId and s3SecretAccessKey must be set together (as secrets)"]


def test_static_keys_and_irsa_are_exclusive(secret: Callable[[str], pulumi.Output[str]]) -> None:
    values = {"modelRepository": {"uri": "s3://models/x", "irsaRoleArn": "arn:aws:iam::123456789012:role/r"}}
    secrets = {"s3AccessKeyId": secret("a"), "s3SecretAccessKey": secret("b")}
    assert any("cannot be combined with static S3 keys" in p for p in _problems(values, secrets))


def test_quantities_compare_across_units() -> None:
    assert quantity_value("500m") == 0.5
    assert quantity_value("1Gi") > quantity_value("1000Mi") > quantity_value("1G")


def test_a_bad_stack_file_stops_the_program_before_any_resource() -> None:
    config = {
        f"inference-platform:{k}": v
        for k, v in {
            **{key.split(":", 1)[1]: value for key, value in stack_config("dev").items()},
            "triton": {"replicas": -1},
        }.items()
    }
    with pytest.raises(ConfigError, match=r"triton.replicas \(-1\)") as raised:
        run_program("dev", config=config)
    assert raised.value.problems


def test_no_stack_file_needs_a_decrypted_secret() -> None:
    for stack in ("dev", "prod"):
        for key, value in stack_config(stack).items():
            assert not (isinstance(value, dict) and "secure" in value), f"Pulumi.{stack}.yaml {key} is encrypted"


def test_a_request_equal_to_its_limit_in_other_units_is_accepted() -> None:
    """As floats, 2300m (2300 x 0.001 = 2.3000000000000003) exceeded 2.3: a valid pod was refused."""
    cfg = parse_config(
        "test", {"modelRepository": {"uri": "s3://models/triton"}, "triton": {"cpuRequest": "2300m", "cpuLimit": "2.3"}}
    )
    assert cfg.triton.cpu_request == "2300m"


def test_hami_selects_gpu_on_nodes_by_default() -> None:
    """HAMi's device plugin selects gpu=on (its chart's default, which Helm keeps beside any selector we add)."""
    cfg = parse_config(
        "test",
        {"modelRepository": {"uri": "s3://models/triton"}, "gpu": {"sharing": "hami"}, "triton": {"cpuRequest": "4"}},
    )
    assert dict(cfg.gpu.node_selector) == {"gpu": "on"}


def test_every_toleration_problem_is_reported_with_its_full_key() -> None:
    accepted = [
        {"operator": "Exists"},  # every taint
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "gpu-a10g", "effect": ""},  # operator Equal; every effect
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
    ]
    refused = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecut"},
        {"key": "dedicated", "operator": "Exists", "value": "gpu"},
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule", "tolerationSeconds": 60},
        {"key": "bad key!", "operator": "Equal", "value": "x"},
        {"operator": "Equal", "value": "x"},
        {"key": "k", "efect": "NoSchedule"},
        "nvidia.com/gpu",
    ]
    assert _problems({**REPO, "gpu": {"tolerations": accepted + refused}}) == [
        "gpu.tolerations[4].effect ('NoExecut') must be NoSchedule, PreferNoSchedule or NoExecute",
        "gpu.tolerations[5].value ('gpu') must be empty with operator Exists (Equal matches a value)",
        "gpu.tolerations[6].tolerationSeconds (60) only applies with effect NoExecute (here NoSchedule)",
        "gpu.tolerations[7].key ('bad key!') must be a label key such as nvidia.com/gpu",
        "gpu.tolerations[8].key (None) is required with operator Equal (only Exists tolerates every key)",
        "gpu.tolerations[9].efect is not a known key; did you mean 'effect'?",
        "gpu.tolerations[10] ('nvidia.com/gpu') must be an object",
    ]
    assert _parse(gpu={"tolerations": accepted}).gpu.tolerations == tuple(accepted)


def test_whole_gpus_under_the_mixed_mig_strategy_are_refused_with_what_to_set_instead() -> None:
    """A MIG-partitioned node under the mixed strategy advertises nvidia.com/mig-<profile>, never nvidia.com/gpu."""
    (problem,) = _problems({**REPO, "gpu": {"sharing": "whole", "migStrategy": "mixed"}})
    assert problem.startswith("gpu.migStrategy ('mixed') cannot be used with gpu.sharing whole: ")
    assert "nvidia.com/mig-<profile>" in problem and "set gpu.migStrategy single" in problem
    assert _parse(gpu={"sharing": "whole", "migStrategy": "single"}).gpu.mig_strategy == "single"
    assert _parse(gpu={"sharing": "hami", "migStrategy": "mixed"}, triton={"cpuRequest": "4"}).gpu.uses_mig


@pytest.mark.parametrize(
    ("triton", "gateway", "clients"),
    [
        ({}, False, ("triton",)),
        ({"namespace": "serving"}, False, ("serving",)),
        ({"clientNamespaces": ["apps", "apps"]}, False, ("apps",)),
        ({"clientNamespaces": []}, False, ()),
        ({}, True, ("triton", "envoy-gateway-system")),
        ({"clientNamespaces": []}, True, ("envoy-gateway-system",)),
    ],
)
def test_triton_clients_are_its_own_namespace_by_default_then_the_listed_ones_and_the_gateway(
    triton: dict[str, Any], gateway: bool, clients: tuple[str, ...]
) -> None:
    cfg = _parse(triton=triton, loadBalancer={"enabled": gateway})
    assert cfg.triton_clients == clients
