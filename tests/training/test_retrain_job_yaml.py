"""packaging/azureml/retrain-job.yml loads with azure-ai-ml (offline) and its command parses."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from app.training.continuous import build_parser
from tests.cloud.conftest import REPO, SDK_PYTHON, require

AZUREML = REPO / "packaging" / "azureml"

VALIDATE = """
import json, sys
from azure.ai.ml import load_job
from azure.ai.ml.exceptions import ValidationException
from marshmallow.exceptions import ValidationError
d = sys.argv[1]
job = load_job(d + "/retrain-job.yml")
out = {"type": job.type, "compute": job.compute, "command": job.command,
       "inputs": sorted(job.inputs), "outputs": sorted(job.outputs),
       "pip": job.environment.conda_file["dependencies"][-1]["pip"]}
try:
    load_job(d + "/broken.yml")
    out["broken"] = "accepted"
except (ValidationException, ValidationError) as exc:
    out["broken"] = type(exc).__name__
print(json.dumps(out))
"""


def test_retrain_job_validates_offline_and_runs_the_retrain_entry_point(tmp_path: Path) -> None:
    python = require(SDK_PYTHON)
    for name in ("retrain-job.yml", "retrain-conda.yml"):
        shutil.copy(AZUREML / name, tmp_path / name)
    text = (AZUREML / "retrain-job.yml").read_text()
    (tmp_path / "broken.yml").write_text(text.replace("instance_count: 1", "instance_count: many"))
    run = subprocess.run(
        [str(python), "-c", VALIDATE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    job = json.loads(run.stdout.strip().splitlines()[-1])
    assert job["type"] == "command" and job["compute"] == "cpu-cluster"
    assert job["inputs"] == ["base", "data", "n_envs", "process", "signing_key", "steps", "threads"]
    assert job["outputs"] == ["candidate"]
    assert "torch==2.13.0" in job["pip"] and job["broken"] != "accepted"
    # The command is the retrain entry point and every option it passes exists.
    argv = shlex.split(re.sub(r"\$\{\{[^}]+\}\}", "X", job["command"]))
    assert argv[:3] == ["python", "-m", "app.training.continuous"]
    args = build_parser().parse_args([a if a != "X" else "1" for a in argv[3:]])
    assert args.process == "1" and args.steps == 1 and args.n_envs == 1
