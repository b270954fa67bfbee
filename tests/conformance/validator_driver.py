"""Run iiif-validator-ng's tests against a server and print one JSON line per test, then the
summary line. Runs inside `.venv-validator` (Python >= 3.12), never in the project's venv:

    .venv-validator/bin/python tests/conformance/validator_driver.py URL [--v2] [--skip TEST]...
        [--only TEST]... [--randint TEST=V,V,...]...

It uses the validator's own `run_tests` (what its `iiif-validator` CLI runs), because the CLI only
draws a progress bar and always exits 0. Output lines:
`{"test": "size_up", "name": "...", "ok": true, "failures": [...]}` and finally
`{"summary": {"version": "3.0", "level": "LEVEL_2", "tests": N, "checks": N, "failed": N, ...}}`.

The two arbitrary-rotation tests draw their angle (and rot_region_non90 its regions) from the unseeded
`random` module. Their lines add `"drawn": [...]`, the values `random.randint` returned in order, so
a failure seen once can be replayed: `--randint rot_full_non90=45` makes the test draw exactly those
values (rot_full_non90 draws the angle; rot_region_non90 draws angle, x, y, w, h, twice).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
from collections.abc import Iterator

import pyvips
from iiif_validator import validate
from iiif_validator.tests.test import IIIFVersion, TargetServer, ValidationFailure

RANDOM_TESTS = ("rot_full_non90", "rot_region_non90")


def module_name(test: type) -> str:
    """The validator's test module name (`size_up`), the name its own output shows in brackets."""
    return test.__module__.rsplit(".", 1)[-1]


def select_tests(skip: set[str], only: set[str]) -> None:
    """Leave tests out of the validator's own test list (`validate.get_tests`): the `skip`ped ones, and
    all but the `only` ones when any are named."""
    original = validate.get_tests
    validate.get_tests = lambda version: [t for t in original(version) if module_name(t) not in skip
                                          and (not only or module_name(t) in only)]


class Draws:
    """Stands in for the `random` module inside one validator test module (which calls only
    `random.randint`): returns the values of `source` in order and records them in `drawn`."""

    def __init__(self, source: Iterator[int]) -> None:
        self.source = source
        self.drawn: list[int] = []

    def randint(self, a: int, b: int) -> int:
        value = next(self.source, None)
        if value is None or not a <= value <= b:  # a script too short, or out of step with the test's draws
            raise ValueError(f"scripted randint({a}, {b}) has no valid value (got {value}; drawn so far {self.drawn})")
        self.drawn.append(value)
        return value


def real_draws() -> Iterator[int]:
    """rot_full_non90's own draws: an angle, redrawn by the test itself while it is a multiple of 90."""
    while True:
        yield random.randint(1, 359)


def region_draws() -> Iterator[int]:
    """rot_region_non90's own draws (angle, x, y, w, h, as often as it asks), minus those it cannot check.
    The test compares the crop (w/4, h/4, w/4, h/4) of the rotated region, which lies outside the
    rotated image when a thin region is turned near 90 degrees (400x100 at 80 degrees is 167 px wide;
    about 1.3% of draws), and then crashes with `extract_area: bad extract area` on its own expected
    image as much as on ours: a bug of the validator, not the server, so such draws are redrawn here."""
    while True:
        rot = random.choice([r for r in range(1, 360) if r % 90])  # what the test's redraw loop amounts to
        x, y, w, h = random.randint(0, 500), random.randint(0, 500), random.randint(100, 400), random.randint(100, 400)
        turned = pyvips.Image.black(w, h).rotate(rot)
        if 2 * (w // 4) <= turned.width and 2 * (h // 4) <= turned.height:
            yield from (rot, x, y, w, h)


def install_draws(scripts: dict[str, list[int]]) -> dict[str, Draws]:
    """Replace `random` in the two arbitrary-rotation test modules, by the scripted values when given."""
    draws = {}
    for name in RANDOM_TESTS:
        source = iter(scripts[name]) if name in scripts else \
            (region_draws() if name == "rot_region_non90" else real_draws())
        draws[name] = Draws(source)
        importlib.import_module(f"iiif_validator.tests.{name}").random = draws[name]
    return draws


def parse_script(text: str) -> tuple[str, list[int]]:
    name, _, values = text.partition("=")
    if name not in RANDOM_TESTS:
        raise argparse.ArgumentTypeError(f"--randint applies to {', '.join(RANDOM_TESTS)}, not {name!r}")
    try:
        return name, [int(v) for v in values.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--randint {text!r}: {exc}") from exc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--v2", action="store_true")
    parser.add_argument("--validation-id", default="67352ccc-d1b0-11e1-89ae-279075081939")
    parser.add_argument("--skip", action="append", default=[], help="a test module name to leave out")
    parser.add_argument("--only", action="append", default=[], help="a test module name to run (others are left out)")
    parser.add_argument("--randint", action="append", default=[], type=parse_script,
                        help="TEST=V,V,...: the values random.randint returns in that test, in order")
    args = parser.parse_args()
    select_tests(set(args.skip), set(args.only))
    draws = install_draws(dict(args.randint))
    server = TargetServer(args.base_url, args.validation_id, IIIFVersion.V2 if args.v2 else IIIFVersion.V3)
    features = server.feature_set()
    checks = failed = tests = 0
    for test, result in validate.run_tests(server, max_threads=4):
        results = result if isinstance(result, list) else [result]
        failures = [r._asdict() for r in results if isinstance(r, ValidationFailure)]
        tests += 1
        checks += len(results)
        failed += len(failures)
        line = {"test": module_name(test), "name": test.name, "ok": not failures, "failures": failures}
        if module_name(test) in draws:
            line["drawn"] = draws[module_name(test)].drawn
        print(json.dumps(line), flush=True)
    summary = {"version": server.version.value, "level": features.compliance_level.name, "tests": tests,
               "checks": checks, "passed": checks - failed, "failed": failed, "skipped": sorted(args.skip),
               "extra_features": features.extra_features, "extra_formats": features.extra_formats,
               "extra_qualities": features.extra_qualities}
    print(json.dumps({"summary": summary}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
