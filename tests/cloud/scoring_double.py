"""Entry script for the local azmlinfsrv in tests: the real score.py plus scripted faults.

A request header ``x-intelwatt-fault`` makes the server misbehave the way a managed endpoint can:
``garbage`` (200 with a non-JSON body), ``error`` (run() raises → 500), ``model_error`` (424 with
the headers Azure adds when the container fails), ``rate_limited`` (429), ``wrong_version`` (200 from
another policy version), ``nan_action`` (200 with a NaN action), ``sleep:<seconds>`` (answers late).
Without the header the request goes to ``score.run`` unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging" / "azureml"))

import score
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init() -> None:
    score.init()


@rawhttp
def run(request: AMLRequest) -> AMLResponse:
    fault = request.headers.get("x-intelwatt-fault", "")
    if fault.startswith("sleep:"):
        time.sleep(float(fault.partition(":")[2]))
    elif fault == "garbage":
        return AMLResponse("<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"})
    elif fault == "error":
        raise RuntimeError("scripted failure inside run()")
    elif fault == "model_error":
        headers = {"ms-azureml-model-error-statuscode": "500", "ms-azureml-model-error-reason": "x"}
        return AMLResponse({"message": "model error"}, 424, headers, json_str=True)
    elif fault == "rate_limited":
        return AMLResponse({"message": "too many requests"}, 429, {"Retry-After": "0"}, True)
    elif fault in ("wrong_version", "nan_action"):
        response = score.run(request)
        doc = json.loads(response.get_data())
        if fault == "wrong_version":
            doc["policy_version"] = "someone-else.1"
        else:
            doc["action"] = {k: float("nan") for k in doc["action"]}
        return AMLResponse(json.dumps(doc), 200, {"Content-Type": "application/json"})
    return score.run(request)
