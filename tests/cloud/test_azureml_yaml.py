"""The Azure ML YAML files load with the azure-ai-ml SDK (offline, in its own venv)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.cloud.conftest import REPO, SDK_PYTHON, require

AZUREML = REPO / "packaging" / "azureml"

VALIDATE = """
import json, sys
from azure.ai.ml import load_environment, load_online_deployment, load_online_endpoint
from azure.ai.ml.exceptions import ValidationException
from marshmallow.exceptions import ValidationError
d = sys.argv[1]
out = {}
env = load_environment(d + "/environment.yml")
out["env"] = [env.name, env.image, sorted(env.conda_file["dependencies"][-1]["pip"])]
ep = load_online_endpoint(d + "/endpoint.yml")
out["endpoint"] = [ep.name, ep.auth_mode]
dep = load_online_deployment(d + "/deployment.yml")
out["deployment"] = [dep.name, dep.endpoint_name, dep.code_configuration.scoring_script,
                     dep.request_settings.request_timeout_ms, dep.environment_variables]
try:
    load_online_deployment(d + "/broken.yml")
    out["broken"] = "accepted"
except (ValidationException, ValidationError) as exc:
    out["broken"] = type(exc).__name__
print(json.dumps(out))
"""


def test_endpoint_deployment_and_environment_validate_offline(tmp_path: Path) -> None:
    python = require(SDK_PYTHON)
    for name in ("environment.yml", "conda.yml", "endpoint.yml", "deployment.yml"):
        shutil.copy(AZUREML / name, tmp_path / name)
    broken = (
        (AZUREML / "deployment.yml")
        .read_text()
        .replace("instance_count: 1", "instance_count: many")
    )
    (tmp_path / "broken.yml").write_text(broken)
    run = subprocess.run(
        [str(python), "-c", VALIDATE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["endpoint"] == ["intelwatt-ro", "key"]
    assert result["deployment"][:4] == ["blue", "intelwatt-ro", "packaging/azureml/score.py", 2000]
    assert result["deployment"][4] == {"INTELWATT_SCORING_DEPLOYMENT": "blue"}
    requirements = [
        line.strip()
        for line in (AZUREML / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert result["env"][2] == sorted(requirements)  # the cloud image = the tested venv
    assert result["broken"] != "accepted"
