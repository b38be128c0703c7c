"""The script a Kaggle kernel runs: written into the bundle by `kit kernel push`, its SETTINGS filled in.

    KIT_KAGGLE_ROOT=/tmp/fake-kaggle python kit_kernel.py   # the same, on a fake /kaggle tree (tests)

Inside the kernel (no internet) it installs kit from the attached code dataset (the wheel, with pip: no
index, no dependencies, into a temporary folder; Kaggle's image already has TensorFlow, Keras, KerasCV and
pandas), writes the pushed config, and runs each stage as `python -m kit <stage>` in Kaggle Notebook mode:
the competition is read from <root>/input, runs/, submissions/ and submission.csv go to <root>/working
(what Kaggle keeps as the kernel's output). The extracted data and the caches go to a temporary folder
instead: 25,000 photos and a pixel cache are not worth saving as output. A stage that fails ends the
script with its exit status, so the kernel ends in ERROR and its log's last lines say why.
Only the standard library is used here: kit is not importable until it is installed.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS: dict = {}  # filled in by kit.kernel.bundle (this line is replaced)
SUMMARY = "kit-kernel.json"  # what ran, for `kit kernel output`


def find_file(folder: Path, name: str) -> Path:
    """The first file called `name` under `folder` (attached datasets mount at several depths)."""
    for path in sorted(folder.rglob(name)):
        if path.is_file():
            return path
    sys.exit(f"kit kernel: {name} is not under {folder}: attach the datasets `kit kernel push` uploaded "
             f"(kernel-metadata.json dataset_sources)")


def install(wheel: Path, target: Path) -> None:
    print(f"kit kernel: installing {wheel.name} from {wheel.parent}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True)


def stage_command(stage: str, config: Path, scratch: Path, weights: Path | None) -> list[str]:
    sets = [f"paths.data_dir={scratch / 'data'}", f"paths.cache_dir={scratch / 'cache'}"]
    if weights is not None:
        sets.append(f"model.weights={weights}")
    command = [sys.executable, "-m", "kit", stage, "--config", str(config)]
    for item in sets:
        command += ["--set", item]
    return command


def main() -> int:
    root = Path(os.environ.get("KIT_KAGGLE_ROOT") or "/kaggle")
    working, started = root / "working", time.time()
    working.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="kit-kernel-"))
    print(f"kit kernel: config {SETTINGS['config_name']}, pushed {SETTINGS['pushed']} (kit {SETTINGS['kit']}, "
          f"commit {SETTINGS['commit'] or 'unknown'}, Keras backend {SETTINGS.get('keras_backend') or 'tensorflow'}); "
          f"scratch {scratch}", flush=True)
    install(find_file(root / "input", SETTINGS["wheel"]), scratch / "lib")
    config = scratch / f"{SETTINGS['config_name']}.yaml"  # the file's name is the config's name (run names)
    config.write_text(SETTINGS["config_yaml"])
    weights = find_file(root / "input", SETTINGS["weights_file"]) if SETTINGS["weights_file"] else None
    # KERAS_BACKEND: jax on the TPU machine (TensorFlow cannot reach its cores there), else tensorflow
    env = dict(os.environ, KIT_KAGGLE_ROOT=str(root), KIT_SOURCE_COMMIT=SETTINGS["commit"] or "",
               KERAS_BACKEND=SETTINGS.get("keras_backend") or "tensorflow",
               PYTHONPATH=os.pathsep.join(filter(None, [str(scratch / "lib"), os.environ.get("PYTHONPATH")])))
    done: dict = {"config": SETTINGS["config_name"], "stages": {}, "status": "running"}
    for stage in SETTINGS["stages"]:
        print(f"kit kernel: {stage}", flush=True)
        began = time.time()
        code = subprocess.run(stage_command(stage, config, scratch, weights), env=env).returncode
        done["stages"][stage] = {"seconds": round(time.time() - began, 1), "exit": code}
        if code != 0:
            done["status"] = f"{stage} failed"
            break
    else:
        done["status"] = "complete"
    done["seconds"] = round(time.time() - started, 1)
    (working / SUMMARY).write_text(json.dumps(done, indent=2) + "\n")
    if done["status"] != "complete":
        print(f"kit kernel: {done['status']} (exit {code}); its error is the line above", flush=True)
        return code or 1
    print(f"kit kernel: done in {done['seconds']:.0f} s; outputs in {working}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
