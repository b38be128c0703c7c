"""The steps a stage will run, with their image counts and estimated seconds, and the disk their caches need.

    python -m kit plan --config configs/dogs-vs-cats-redux.yaml     # the same lines start `train` and `submit`

From the index (image counts), the caches already on disk (a cached step costs nothing) and the probe's rates
(kit/plan/probe.py). Step names are the ones kit/timings.py records, so a run's plan.json and timings.json
compare step by step (BENCHMARKS.md, "full size"). When fine-tuning on a CPU would take long, the plan says
so and names the faster paths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from kit import paths as kit_paths
from kit.config import Config
from kit.data import pipeline
from kit.errors import KitError
from kit.model import features
from kit.plan import probe
from kit.timings import duration

LONG_ON_CPU = 30 * 60  # seconds of fine-tuning past which the plan names the faster paths
CHECKPOINT_S = 1.0  # per fine-tune epoch: best.keras, the BackupAndRestore copy, logs (measured: ~0.5-1.5 s)
REPORT_S = 2.5  # report.html and its plots (measured at 600 and 5,000 validation images: 2-2.5 s)


@dataclass
class Step:
    name: str
    images: int
    seconds: float
    note: str = ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cached(cfg: Config, paths: list[str], name: str) -> bool:
    return cfg.data.cache == "disk" and pipeline.cache_file(cfg, paths, name).exists()


def features_cached(cfg: Config, rates: dict, paths: list[str], name: str, view: str, augment_pass: int = 0) -> bool:
    """Whether the feature array of `paths` through `view` (or augmented pass k) is on disk already."""
    from kit.model import features

    if "identity" not in rates:
        return False
    key = features.feature_key(cfg, rates["identity"], paths, view, augment_pass)
    return features.feature_file(cfg, key, name).exists()


def decode_steps(cfg: Config, splits: dict[str, list[str]], rates: dict) -> list[Step]:
    steps = []
    for name, paths in splits.items():
        if cached(cfg, paths, name):
            steps.append(Step(f"decode {name}", len(paths), 0.0, "pixel cache on disk"))
        else:
            steps.append(Step(f"decode {name}", len(paths), len(paths) / rates["decode"]))
    return steps


def feature_step(cfg: Config, rates: dict, name: str, paths: list[str], views: list[tuple[str, int]],
                 note: str = "") -> Step:
    """Forward passes over `paths` for each (view, augmented pass) not cached yet."""
    todo = [v for v in views if not features_cached(cfg, rates, paths, name, *v)]
    images = len(paths) * len(todo)
    note = note if todo else "feature cache on disk"
    return Step(f"features {name}", images, images / rates["engine"], note)


def train_steps(cfg: Config, index, rates: dict) -> list[Step]:
    t, n_train, n_val = cfg.train, len(index.train), len(index.val)
    splits = {"train": list(index.train["path"]), "val": list(index.val["path"])}
    views = list(cfg.submit.tta)
    steps = [Step("set-up", 0, rates["build_s"], "the model built, its weights loaded")]
    on_features = t.head == "features" and t.head_epochs
    feature_steps = []
    if on_features:
        passes = 1 + t.feature_passes
        feature_steps.append(feature_step(cfg, rates, "train", splits["train"], [("original", k) for k in range(passes)]))
        feature_steps.append(feature_step(cfg, rates, "val", splits["val"], [("original", 0)]))
    if on_features and not t.finetune_epochs:
        feature_steps.append(feature_step(cfg, rates, "val", splits["val"], [(v, 0) for v in views if v != "original"],
                                          "the other TTA views"))
    # Pixels are decoded where a pass over images is still to come: every fine-tune, or a feature not cached.
    pending = {s.name for s in feature_steps if s.images}
    needed = {name: p for name, p in splits.items()
              if t.finetune_epochs or t.head != "features" or f"features {name}" in pending}
    steps += decode_steps(cfg, needed, rates)
    again_all = features.refits(cfg)  # train.refit_all
    refit = f", then again on all {n_train + n_val:,} (train.refit_all)" if again_all else ""
    if on_features:
        if again_all and t.feature_passes:  # the validation images' augmented passes, for the refit
            feature_steps[1] = feature_step(cfg, rates, "val", splits["val"], [("original", k) for k in range(passes)])
        steps += feature_steps[:2]
        heads = max(1, t.folds) + again_all  # train.folds: k heads, each on k-1 folds of the rows
        samples = t.head_epochs * passes * (n_train * max(1, t.folds - 1) + again_all * (n_train + n_val))
        if "logistic_row_s" in rates:  # kit/train/logistic.py: no epochs
            seconds, what = logistic_seconds(cfg, rates, n_train, n_val, again_all), "a logistic regression"
        else:
            seconds = heads * (rates.get("head_setup_s", 0.0) + t.head_epochs * rates.get("head_epoch_s", 0.0)) + \
                samples / rates["head"]
            what = plural(t.head_epochs, "epoch")
        steps.append(Step("head", samples, seconds, what + " on feature vectors"
                          + (f", {t.folds} fold heads" if t.folds > 1 else "") + refit))
    elif t.head_epochs:
        per_epoch = n_train / rates["frozen"] + n_val / rates["keras"]
        again = again_all * (rates["frozen_warmup_s"] + t.head_epochs * (n_train + n_val) / rates["frozen"])
        steps.append(Step("head", t.head_epochs * (n_train + again_all * (n_train + n_val)),
                          rates["frozen_warmup_s"] + t.head_epochs * per_epoch + again,
                          f"{plural(t.head_epochs, 'epoch')}, backbone frozen" + refit))
    if t.finetune_epochs:
        epoch = n_train / rates["finetune"] + n_val / rates["keras"] + CHECKPOINT_S
        again = again_all * (rates["finetune_warmup_s"] + rates.get("save_load_s", 0.0) + t.finetune_epochs *
                               ((n_train + n_val) / rates["finetune"] + CHECKPOINT_S))  # no validation to predict
        steps.append(Step("fine-tune", t.finetune_epochs * (n_train + again_all * (n_train + n_val)),
                          rates["finetune_warmup_s"] + t.finetune_epochs * epoch + again,
                          f"{plural(t.finetune_epochs, 'epoch')} of {duration(epoch)}, layer-group rates" + refit))
        steps.append(Step("predict val", n_val * len(views), rates["model_convert_s"] + n_val * len(views) / rates["engine"],
                          f"{len(views)} TTA views, best epoch"))
    elif on_features:
        steps += feature_steps[2:]
    steps.append(Step("writing", 0, rates.get("save_load_s", 0.0) + REPORT_S, "the best model saved and loaded, "
                      "validation predictions, the report"))
    return steps


def logistic_seconds(cfg: Config, rates: dict, n_train: int, n_val: int, again_all: bool) -> float:
    """kit/train/logistic.py's fits: the C search (each fold's rows once per C) unless train.logistic_c is set,
    then the fit on every training row, per head (train.folds) and once more for the refit."""
    from kit.train.logistic import C_GRID, LOGISTIC_FOLDS

    t = cfg.train
    search = 0 if t.logistic_c else len(C_GRID) * (LOGISTIC_FOLDS - 1) / LOGISTIC_FOLDS
    rows = (1 + t.feature_passes) * (n_train * (1 + search) * max(1, t.folds - 1)
                                     + again_all * (n_train + n_val) * (1 + search))
    return rows * rates["logistic_row_s"]


def submit_steps(cfg: Config, index, rates: dict, head_only: bool, converted: bool,
                 snapshots: int = 0) -> list[Step]:
    """Scoring the run's validation images and predicting the test set, each over the TTA views."""
    views = list(cfg.submit.tta)
    n_val, n_test = len(index.val), len(index.test) if index.test is not None else 0
    steps = [Step("set-up", 0, rates["build_s"], "the run's model loaded")]
    test = list(index.test["path"]) if n_test else []
    if head_only:
        features = feature_step(cfg, rates, "test", test, [(v, 0) for v in views], f"{len(views)} TTA views")
        steps += decode_steps(cfg, {"test": test} if features.images else {}, rates)
        return steps + [features]
    steps += decode_steps(cfg, {"test": test} if n_test else {}, rates)
    convert = 0.0 if converted else rates["model_convert_s"]
    # submit.snapshots: every snapshot predicts validation, the chosen ones (at most all) the test set; each
    # loaded snapshot converts its engine copy once per split.
    models = 1 + snapshots
    test_models = (cfg.submit.snapshot_k if cfg.submit.snapshots == "last_k" else snapshots) or 1
    extra = f", best.keras + {plural(snapshots, 'snapshot')}" if snapshots else ""
    steps.append(Step("predict val", n_val * len(views) * models, convert + snapshots * rates["model_convert_s"]
                      + n_val * len(views) * models / rates["engine"], f"{len(views)} TTA views{extra}"))
    test_convert = test_models * rates["model_convert_s"] if snapshots else 0.0  # best.keras: converted for val
    steps.append(Step("predict test", n_test * len(views) * test_models,
                      test_convert + n_test * len(views) * test_models / rates["engine"],
                      f"{len(views)} TTA views" + (f", up to {plural(test_models, 'snapshot')}" if snapshots else "")))
    return steps


def cache_bytes(cfg: Config, index, stage: str, dim: int) -> int:
    """What the caches this stage writes need on disk (the ones already there need nothing)."""
    splits = {"train": list(index.train["path"]), "val": list(index.val["path"])}
    if stage in ("submit", "all") and index.test is not None:
        splits["test"] = list(index.test["path"])
    total = sum(pipeline.cache_bytes(len(p), cfg.data.image_size) for name, p in splits.items()
                if cfg.data.cache == "disk" and not cached(cfg, p, name))
    if cfg.train.head == "features":
        vectors = len(index.train) * (1 + cfg.train.feature_passes) + len(index.val) * len(cfg.submit.tta)
        vectors += len(splits.get("test", [])) * len(cfg.submit.tta)
        total += vectors * dim * 4
    return total


def faster_paths(cfg: Config, finetune_s: float) -> str:
    return (f"note: fine-tuning is estimated at {duration(finetune_s)} on this CPU. Faster: a head-only run on cached "
            f"features (train.finetune_epochs=0, minutes), a smaller image (data.image_size=160: about half the time "
            f"per epoch), fewer epochs (train.finetune_epochs=3, an SGDR cycle end), or Kaggle's GPUs "
            f"(`kit kernel push --gpu`)")


def table(title: str, steps: list[Step]) -> str:
    lines = [title, f"  {'step':<16}{'images':>10}  {'estimate':>9}  note"]
    for s in steps:
        lines.append(f"  {s.name:<16}{s.images:>10,}  {duration(s.seconds):>9}  {s.note}")
    lines.append(f"  {'total':<16}{'':>10}  {duration(sum(s.seconds for s in steps)):>9}")
    return "\n".join(lines)


def disk_line(cfg: Config, needed: int) -> str:
    folder = kit_paths.cache_dir(cfg)
    free = probe.free_bytes(folder)
    line = f"  disk: new caches need {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {folder}"
    if needed > free:
        raise KitError(f"the caches this run writes need {needed / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB "
                       f"free: free space, set paths.cache_dir to a bigger disk, or data.cache=none")
    return line


def describe(cfg: Config, index, stage: str, head_only: bool, converted: bool = False,
             snapshots: int = 0) -> tuple[str, list[Step]]:
    """The plan's text and steps for `stage` ("train", "submit" or "all"); probes first if it must."""
    from kit.model import device

    needs = (False, "none") if stage == "submit" else (cfg.train.finetune_epochs > 0, cfg.train.head)
    rates, path, measured = probe.rates_for(cfg, index, *needs)
    steps: list[Step] = []
    if stage in ("train", "all"):
        steps += train_steps(cfg, index, rates)
    if stage in ("submit", "all") and index.test is not None:
        steps += submit_steps(cfg, index, rates, head_only, converted, snapshots)
    counts = f"{len(index.train):,} train, {len(index.val):,} val" + (
        f", {len(index.test):,} test" if index.test is not None else "")
    title = (f"plan ({stage}): {counts} images at {cfg.data.image_size} px on {device.describe()} "
             f"(probe {'measured now in ' + duration(rates['probe_s']) if measured else 'read from ' + str(path)})")
    members = member_steps(cfg, index, stage)
    if stage == "submit":  # predicted by the same submit: its total counts them
        steps += [Step(f"{name}: {s.name}", s.images, s.seconds, s.note) for name, each in members for s in each]
    text = [table(title, steps), disk_line(cfg, cache_bytes(cfg, index, stage, rates["feature_dim"]))]
    if members and stage != "submit":
        text.append("  then train.members, each a run of its own that prints its plan as it starts: " + ", ".join(
            f"{name} {duration(sum(s.seconds for s in each))}" for name, each in members))
    tuning = sum(s.seconds for s in steps if s.name == "fine-tune")
    if tuning > LONG_ON_CPU and device.accelerator() is None:
        text.append("  " + faster_paths(cfg, tuning))
    return "\n".join(text), steps


def member_steps(cfg: Config, index, stage: str) -> list[tuple[str, list[Step]]]:
    """(m1, its steps), ... for train.members (kit/train/members.py), each planned as its own run."""
    from kit.train.members import distinct_members, with_overrides

    planned = []
    for number in distinct_members(cfg) if cfg.train.members else []:
        member = features.run_config(with_overrides(cfg, number))
        planned.append((f"m{number}", describe(member, index, stage, features.is_head_only(member))[1]))
    return planned


def print_plan(cfg: Config, index, stage: str, head_only: bool, converted: bool = False,
               snapshots: int = 0) -> list[dict]:
    """The plan's lines at the start of `stage` (unless train.plan=false); its steps as dicts (plan.json).

    A caches-don't-fit KitError stops the stage before it writes anything; any other failure of the estimate
    is one line and the stage goes on: an estimate must never stop the work it estimates."""
    if not cfg.train.plan:
        return []
    try:
        text, steps = describe(cfg, index, stage, head_only, converted, snapshots)
    except KitError:
        raise
    except Exception as error:  # noqa: BLE001
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        print(f"{stage}: no plan ({type(error).__name__}: {first}); train.plan=false skips it", flush=True)
        return []
    print(text, flush=True)
    return [asdict(s) for s in steps]


def took_line(seconds: float, steps: list[dict]) -> str:
    planned = sum(s["seconds"] for s in steps)
    return f"done in {duration(seconds)}" + (f" (the plan said {duration(planned)})" if steps else "")
