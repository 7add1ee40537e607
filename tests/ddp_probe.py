"""``python -m cvlab`` with probes, for tests/test_distributed.py: torchrun runs this file instead of
``-m cvlab`` (``torchrun --nproc-per-node 2 tests/ddp_probe.py train ...``), so the command under test is the
real one, and the probes live here, not in cvlab. Each probe is switched on by a variable the tests set:

    CVLAB_PROBE_HISTORY=path-{rank}.json     every rank writes the History its fit returned
    CVLAB_PROBE_WEIGHTS=path-{rank}.json     every rank writes, after each epoch, the sums (float64) of its
                                             backbone's parameters, of its BatchNorm statistics and of its
                                             head's parameters, and whether the backbone had requires_grad
    CVLAB_PROBE_FAIL=RANK:EPOCH:raise|hang   that rank raises a RuntimeError (or sleeps for an hour) when
                                             that epoch starts
"""
import json
import os
import sys
import time
from pathlib import Path

from cvlab import training
from cvlab.__main__ import main

RANK = os.environ.get("RANK", "0")


def _write(variable: str, value) -> None:
    Path(os.environ[variable].format(rank=RANK)).write_text(json.dumps(value))


if os.environ.get("CVLAB_PROBE_HISTORY"):
    real_fit = training.fit

    def fit(*args, **kwargs):
        history = real_fit(*args, **kwargs)
        _write("CVLAB_PROBE_HISTORY", history.records)
        return history

    training.fit = fit

real_run_epoch, weights = training._run_epoch, []


def run_epoch(epoch, model, *args, **kwargs):
    how = os.environ.get("CVLAB_PROBE_FAIL", "")
    if how and how.split(":")[:2] == [RANK, str(epoch)]:
        if how.endswith(":hang"):
            time.sleep(3600)
        raise RuntimeError(f"probe: rank {RANK} fails at the start of epoch {epoch}")
    record = real_run_epoch(epoch, model, *args, **kwargs)
    if os.environ.get("CVLAB_PROBE_WEIGHTS"):
        module = getattr(model, "module", model)
        backbone, head = list(module.features.parameters()), list(module.classifier.parameters())
        weights.append({"epoch": epoch, "backbone": sum(p.double().sum().item() for p in backbone),
                        "head": sum(p.double().sum().item() for p in head),
                        "statistics": sum(b.double().sum().item() for b in module.features.buffers()),
                        "backbone_trains": all(p.requires_grad for p in backbone)})
        _write("CVLAB_PROBE_WEIGHTS", weights)
    return record


training._run_epoch = run_epoch

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
