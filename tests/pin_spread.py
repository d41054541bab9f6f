"""Measures how far the regression pins move across CPUs and XLA builds.

Every pinned computation of ``test_pins.py`` (its cases and baselines) is recorded again
in fresh processes under XLA settings that change the order of floating-point reductions
or the CPU features the compiled code may use; each record is compared with the pins
under the normalisation of :func:`_pinning.deviations`. The largest deviation seen, over
the settings and the machine that recorded the pins, is the spread the pins' tolerance
is derived from (see ``docs/development.md``).

    python tests/pin_spread.py [OUT_DIR [SETTING ...]]  # every case once per setting

The records are kept in ``OUT_DIR`` (one JSON per setting; an existing one is reused).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "default": "",
    "single-thread-eigen": "--xla_cpu_multi_thread_eigen=false",
    "avx2": "--xla_cpu_max_isa=AVX2",
    "sse4_2": "--xla_cpu_max_isa=SSE4_2",
}
"""XLA flags per setting: Eigen's threads partition the contractions (the reduction
order depends on the core count), and the ISA limit changes the vector width of the
code XLA generates, as another CPU would."""

_RECORD = """
import json, sys
sys.path.insert(0, {here!r})
import test_pins
out = {{"pins": {{n: test_pins.record_case(n) for n in sorted(test_pins.CASES)}},
        "baselines": {{n: test_pins.record_baseline(n) for n in test_pins.BASELINE_SETTINGS}}}}
json.dump(out, open({path!r}, "w"))
"""


def record(setting: str, out: Path) -> Path:
    """The pinned computations recorded under ``setting`` in a fresh process."""
    path = out / f"{setting}.json"
    if not path.exists():
        env = {**os.environ, "XLA_FLAGS": SETTINGS[setting], "JAX_PLATFORMS": "cpu"}
        code = _RECORD.format(here=str(HERE), path=str(path))
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return path


def main(out: Path, settings: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    from _pinning import deviations

    out.mkdir(parents=True, exist_ok=True)
    pinned = {
        "pins": json.loads((HERE / "pins" / "pins.json").read_text()),
        "baselines": json.loads((HERE / "pins" / "baselines.json").read_text()),
    }
    worst: dict[str, float] = {}
    for setting in settings:
        got = json.loads(record(setting, out).read_text())
        for group, cases in pinned.items():
            for name, want in cases.items():
                for key, dev in deviations(got[group][name], want).items():
                    tag = f"{group}/{name}/{key}"
                    worst[tag] = max(worst.get(tag, 0.0), dev)
                    print(f"{setting:20s} {tag:45s} {dev:.3g}")
    top = max(worst, key=worst.get)
    print(f"largest normalised deviation: {worst[top]:.3g} ({top})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else Path("pin_spread"), args[1:] or list(SETTINGS))
