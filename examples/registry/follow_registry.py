"""A router that follows a threshold registry: push, approve, promote, and watch the router pick it up.

Run it as is: it makes a SQLite registry in a temporary folder, starts a local fake OpenAI-compatible
server (its ``small`` model is unsure on ``[hard]`` prompts) and does what two operators would do
with the CLI::

    confidence-router registry push tuned.yaml --name support --url registry.db --by ann
    confidence-router registry approve --name support --version 1 --url registry.db --by bob
    confidence-router registry promote --name support --version 1 --url registry.db --by bob

    python examples/registry/follow_registry.py

The router's configuration names the registry instead of thresholds; a background thread polls it
every ``poll_s`` and requests read the version in memory. The script prints, per step, the version
each request ran on and which model answered.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from langchain_openai import ChatOpenAI

from langchain_confidence_router.cli import main as confidence_router
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

QUESTION = "[hard] Why is the sky blue?"


def tuned_file(folder: Path, version: str, small_threshold: float) -> Path:
    """What `confidence-router tune` writes, cut down: the chain, its thresholds and the evidence."""
    path = folder / f"tuned-{version}.yaml"
    path.write_text(yaml.safe_dump({
        "algorithm": {"confidence": {"confidence_method": "avg_logprob", "escalation_order": "declared"}},
        "models": [{"name": "small", "threshold": small_threshold}, {"name": "large", "threshold": 0.0}],
        "evidence": {"n": 500, "expected": {"accuracy": 0.91, "largest_accuracy": 0.92, "savings": 0.55}},
    }))
    return path


def router_config(registry: Path) -> dict[str, Any]:
    return {  # the same schema as a confidence.yaml file: no thresholds, a registry instead
        "registry": {"url": str(registry), "name": "support", "poll_s": 0.5},
        "models": [
            {"name": "small", "input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7},
            {"name": "large", "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
        ],
    }


def ask(router: ConfidenceRouter) -> str:
    trace = router.invoke(QUESTION).response_metadata["confidence_router"]
    return f"v{trace['registry']['version']} answered by {trace['final_model']}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="registry-example-") as tmp:
        run(Path(tmp))


def run(folder: Path) -> None:
    registry = folder / "registry.db"
    cli = ["--name", "support", "--url", str(registry)]
    # version 1 trusts the small model (threshold 0.1); version 2 asks more of it (0.9)
    for version, threshold in (("1", 0.1), ("2", 0.9)):
        confidence_router(["registry", "push", str(tuned_file(folder, version, threshold)), *cli, "--by", "ann"])
        confidence_router(["registry", "approve", *cli, "--version", version, "--by", "bob"])
    confidence_router(["registry", "promote", *cli, "--version", "1", "--by", "bob"])

    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(confident_on_hard=True)}
    with FakeOpenAIServer(models) as server:
        tiers = {name: ChatOpenAI(model=name, base_url=server.base_url, api_key="test") for name in models}
        router = ConfidenceRouter(models=tiers, config=router_config(registry))
        print("before:", ask(router))

        confidence_router(["registry", "promote", *cli, "--version", "2", "--by", "bob"])
        time.sleep(1.0)  # two poll intervals: every replica has it by now, without a restart
        print("after promote:", ask(router))

        confidence_router(["registry", "rollback", *cli, "--by", "bob"])
        time.sleep(1.0)
        print("after rollback:", ask(router))
    confidence_router(["registry", "history", *cli])


if __name__ == "__main__":
    main()
