"""Run iiif-validator-ng's tests against a server and print one JSON line per test, then the
summary line. Runs inside `.venv-validator` (Python >= 3.12), never in the project's venv:

    .venv-validator/bin/python tests/conformance/validator_driver.py URL [--v2] [--skip TEST]...

It uses the validator's own `run_tests` (what its `iiif-validator` CLI runs), because the CLI only
draws a progress bar and always exits 0. Output lines:
`{"test": "size_up", "name": "...", "ok": true, "failures": [...]}` and finally
`{"summary": {"version": "3.0", "level": "LEVEL_2", "tests": N, "checks": N, "failed": N, ...}}`.
"""

from __future__ import annotations

import argparse
import json
import sys

from iiif_validator import validate
from iiif_validator.tests.test import IIIFVersion, TargetServer, ValidationFailure


def module_name(test: type) -> str:
    """The validator's test module name (`size_up`), the name its own output shows in brackets."""
    return test.__module__.rsplit(".", 1)[-1]


def skip_tests(names: set[str]) -> None:
    """Leave the named tests out of the validator's own test list (`validate.get_tests`)."""
    original = validate.get_tests
    validate.get_tests = lambda version: [t for t in original(version) if module_name(t) not in names]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--v2", action="store_true")
    parser.add_argument("--validation-id", default="67352ccc-d1b0-11e1-89ae-279075081939")
    parser.add_argument("--skip", action="append", default=[], help="a test module name to leave out")
    args = parser.parse_args()
    skip_tests(set(args.skip))
    server = TargetServer(args.base_url, args.validation_id, IIIFVersion.V2 if args.v2 else IIIFVersion.V3)
    features = server.feature_set()
    checks = failed = tests = 0
    for test, result in validate.run_tests(server, max_threads=4):
        results = result if isinstance(result, list) else [result]
        failures = [r._asdict() for r in results if isinstance(r, ValidationFailure)]
        tests += 1
        checks += len(results)
        failed += len(failures)
        print(json.dumps({"test": module_name(test), "name": test.name,
                          "ok": not failures, "failures": failures}), flush=True)
    summary = {"version": server.version.value, "level": features.compliance_level.name, "tests": tests,
               "checks": checks, "passed": checks - failed, "failed": failed, "skipped": sorted(args.skip),
               "extra_features": features.extra_features, "extra_formats": features.extra_formats,
               "extra_qualities": features.extra_qualities}
    print(json.dumps({"summary": summary}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
