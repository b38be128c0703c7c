"""`make export`: a trained run as files a phone or a server can run, each checked against Keras.

    python -m kit export [--run NAME] [--out DIR]          (make export RUN=NAME OUT=DIR)

Writes <run>/export/ (or --out: a new or empty folder, or an earlier export) through a temporary folder,
put in place only when every check passed; only kit's own files are written or replaced
(kit/submit/export_folder.py), anything else in the folder is left alone:
  model.keras            Keras 3 (`keras.saving.load_model`; ResNet50 runs also need `import kit.model.backbones`)
  saved_model/           TensorFlow SavedModel: serving_default(image) -> {probabilities}; labels() -> {labels}
  model.tflite           TFLite float32, built-in ops only (the plain LiteRT runtime, no Flex delegate)
  model_float16.tflite   TFLite with float16 weights: about half the size
  model_dynamic.tflite   TFLite with int8 weights (dynamic-range quantization): about a quarter
  labels.txt             one class per line: line i names output column i
  export.json            the input/output contract, the classes, each file's size and measured difference
export.formats picks the model files (keras, saved_model, tflite, tflite_float16, tflite_dynamic); all but
keras need the TensorFlow backend (on JAX: KERAS_BACKEND=tensorflow make export, the weights read the same).

Every model takes raw RGB pixels, float32 [N, H, W, 3] in 0..255 at the run's image size: resizing
to H x W is the caller's job, the backbone's normalisation is inside the model. Every model returns
float32 [N, classes] probabilities in labels.txt order: a binary run's single sigmoid P(class 1) is
turned into two columns [1 - p, p] by a fixed Dense layer, so each label has its own output, as
mobile image-classification code expects. Each exported model is run on real images from the run's
validation split and compared with the Keras model; a difference above export.tolerance (float32)
or export.tolerance_quantized (float16, int8 weights) fails the export and leaves nothing behind.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kit import paths as kit_paths
from kit.config import Config
from kit.data.dataset import load_index
from kit.data.user_images import read_images
from kit.errors import KitError
from kit.model import backend
from kit.provenance import library_versions
from kit.runs import RunDir
from kit.submit.export_folder import MARKER, check_target, staged

# format -> (file or folder name, quantized?)
FORMATS = {
    "keras": ("model.keras", False),
    "saved_model": ("saved_model", False),
    "tflite": ("model.tflite", False),
    "tflite_float16": ("model_float16.tflite", True),
    "tflite_dynamic": ("model_dynamic.tflite", True),
}
LABELS = "labels.txt"
CHECK_IMAGES = 32  # validation images every exported model is compared on
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


def deployable(model, classes: list[str]):
    """The model with one probability per class: a binary sigmoid p becomes [1 - p, p]."""
    import keras

    if model.output_shape[-1] == len(classes):
        return model
    if model.output_shape[-1] != 1 or len(classes) != 2:
        raise KitError(f"the model gives {model.output_shape[-1]} outputs for {len(classes)} classes: the run's "
                       "classes.json does not belong to its best.keras; retrain the run")
    # A frozen Dense(2) with kernel [-1, 1] and bias [1, 0]: a built-in layer every format converts.
    both = keras.layers.Dense(2, name="class_probabilities", trainable=False, dtype="float32",
                              kernel_initializer=keras.initializers.Constant([[-1.0, 1.0]]),
                              bias_initializer=keras.initializers.Constant([1.0, 0.0]))
    return keras.Model(model.input, both(model.output), name=f"{model.name}_export")


def reference_images(cfg: Config, run_dir: RunDir, size: int, classes: list[str]) -> tuple[np.ndarray, str]:
    """Up to CHECK_IMAGES validation images (float32 pixels, classes mixed) and where they came from."""
    per_class = -(-CHECK_IMAGES // len(classes))
    listed = run_dir.val_predictions
    source, paths = str(listed.absolute()), []
    if listed.is_file():
        frame = pd.read_csv(listed, dtype={"path": str})
        paths = list(frame.groupby("label").head(per_class)["path"])
    else:  # an unfinished run has no validation predictions: the current index will do if it has the same classes
        try:
            index = load_index(cfg)
        except KitError:  # no index, or one built for other settings: nothing to check against
            index = None
        if index is not None and index.classes == classes:
            source = str(kit_paths.index_dir(cfg).absolute())
            paths = list(index.val.groupby("label").head(per_class)["path"])
    pixels, _ = read_images([(p, "" if Path(p).is_file() else "missing") for p in paths], size)
    if not len(pixels):
        raise KitError(f"no validation images to check the export of run {run_dir.name} against (looked in {listed}): "
                       "finish the run with `make train`, or run `make data` for its dataset")
    return pixels[:CHECK_IMAGES].astype(np.float32), source


def write_saved_model(model, folder: Path, classes: list[str], size: int) -> None:
    """A SavedModel with serving_default(image) -> {probabilities} and labels() -> {labels}.

    Plain tf.saved_model.save on a tf.Module that tracks the raw tf.Variables, not Keras' ExportArchive,
    which stores every weight twice (keras-team/keras#23553: 2x the size on disk and in memory).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    @tf.function(input_signature=[])
    def labels():
        return {"labels": tf.constant(classes)}

    module = tf.Module()
    module.weights = [variable.value for variable in model.variables]  # what `serve` captures
    module.serve, module.labels = serve, labels
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve, "labels": labels})


def write_tflite(saved_model: Path, path: Path, fmt: str) -> None:
    """Convert the SavedModel's serving_default to TFLite (built-in ops only), quantized as `fmt` says."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    if fmt in ("tflite_float16", "tflite_dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        path.write_bytes(converter.convert())
    except Exception as error:  # the converter raises assorted types; all mean "this model won't convert"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise KitError(f"TFLite conversion ({fmt}) failed: {first}: leave {fmt} out of export.formats") from None


def outputs_of(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    """Run the exported model at `path` on `images`, as its users would load it."""
    import tensorflow as tf

    if fmt == "keras":
        import keras

        import kit.model.backbones  # noqa: F401  ResNet's preprocessing layer is registered there

        return keras.saving.load_model(path, compile=False).predict(images, batch_size=32, verbose=0)
    if fmt == "saved_model":
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return serve(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice: LiteRT is the same runtime
        runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(**{INPUT_NAME: images})[OUTPUT_NAME]


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def checked_formats(cfg: Config) -> list[str]:
    formats = list(dict.fromkeys(cfg.export.formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise KitError(f"export.formats {cfg.export.formats} must name some of {', '.join(FORMATS)}"
                       + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return formats


def write_formats(model, folder: Path, scratch: Path, formats: list[str], classes: list[str], size: int) -> dict:
    """Write each format into `folder`; return format -> its path. TFLite is converted from the SavedModel."""
    written = {}
    if "keras" in formats:
        written["keras"] = folder / FORMATS["keras"][0]
        model.save(written["keras"])
    if any(f.startswith("tflite") for f in formats) or "saved_model" in formats:
        saved = folder / FORMATS["saved_model"][0] if "saved_model" in formats else scratch / "saved_model"
        write_saved_model(model, saved, classes, size)
        if "saved_model" in formats:
            written["saved_model"] = saved
        for fmt in (f for f in formats if f.startswith("tflite")):
            written[fmt] = folder / FORMATS[fmt][0]
            write_tflite(saved, written[fmt], fmt)
    return written


def compare(cfg: Config, written: dict, images: np.ndarray, expected: np.ndarray) -> dict:
    """format -> file, bytes, max |difference| and tolerance; KitError naming every format over tolerance."""
    report, over = {}, []
    for fmt, path in written.items():
        quantized = FORMATS[fmt][1]
        tolerance = cfg.export.tolerance_quantized if quantized else cfg.export.tolerance
        difference = float(np.max(np.abs(outputs_of(fmt, path, images) - expected)))
        report[fmt] = {"file": path.name, "bytes": size_of(path), "max_abs_difference": difference,
                       "tolerance": tolerance}
        if not difference <= tolerance:  # also catches NaN
            over.append(f"{fmt} by up to {difference:.3g} "
                        f"({'export.tolerance_quantized' if quantized else 'export.tolerance'} is {tolerance:g})")
    if over:
        formats = ", ".join(o.split(" ")[0] for o in over)
        raise KitError(f"exported model differs from the Keras model on {len(images)} validation images: "
                       f"{'; '.join(over)}: nothing was exported; leave {formats} out of export.formats "
                       "or raise the tolerance")
    return report


def contract(run_dir: RunDir, classes: list[str], size: int, report: dict, source: str, n_images: int) -> dict:
    """What export.json says: how to feed the models, what comes out, and how well each matched Keras."""
    return {
        "run": run_dir.name, "source_model": str(run_dir.best_model.absolute()), "classes": classes,
        "labels_file": LABELS,
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 3], "dtype": "float32", "layout": "NHWC",
                  "channels": "RGB", "range": [0, 255],
                  "preprocessing": f"resize to {size}x{size} (bilinear); normalisation is inside the model"},
        "output": {"name": OUTPUT_NAME, "shape": [None, len(classes)], "dtype": "float32",
                   "meaning": "class probabilities summing to 1; column i is line i of labels.txt"
                   + (f" (the trained model's sigmoid P({classes[1]}) is column 1, column 0 is 1 - it)"
                      if len(classes) == 2 else "")},
        "signatures": {"saved_model": ["serving_default (image -> probabilities)", "labels (-> labels)"],
                       "tflite": ["serving_default (image -> probabilities); the input tensor is [1, H, W, 3] "
                                  "until resized with resize_tensor_input"]},
        "check": {"images": n_images, "source": source, "compared_with": "the Keras model, in memory"},
        "formats": report, "created": datetime.now().isoformat(timespec="seconds"), "versions": library_versions(),
    }


def run(cfg: Config, run_name: str | None = None, out: str | None = None) -> Path:
    """Export a run (default: submit.run, else the newest) into `out` (default: <run>/export); return the folder."""
    formats = checked_formats(cfg)
    tensorflow_only = [f for f in formats if f != "keras"]  # traced as TensorFlow graphs
    if tensorflow_only:
        backend.require_tensorflow(f"exporting {', '.join(tensorflow_only)}", "set export.formats=[keras]")
    run_dir = RunDir.find(cfg, run_name)
    final = Path(out) if out else run_dir.export
    check_target(final, "--out" if out else None)  # before the slow part, and before anything is written
    model, classes = run_dir.load_model()
    size = run_dir.image_size(model)
    model = deployable(model, classes)
    images, source = reference_images(cfg, run_dir, size, classes)
    expected = model.predict(images, batch_size=32, verbose=0)
    print(f"export: run {run_dir.name} ({len(classes)} classes, {size} px) as {', '.join(formats)}, "
          f"checked on {len(images)} validation images")
    own = [name for name, _ in FORMATS.values()] + [LABELS, MARKER]
    with staged(final, own) as folder, tempfile.TemporaryDirectory(prefix="kit-export-") as scratch:
        written = write_formats(model, folder, Path(scratch), formats, classes, size)
        report = compare(cfg, written, images, expected)
        (folder / LABELS).write_text("".join(f"{name}\n" for name in classes))
        meta = contract(run_dir, classes, size, report, source, len(images))
        (folder / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    for fmt, item in report.items():
        print(f"  {item['file']:<22} {item['bytes'] / 1e6:8.2f} MB   max |difference| {item['max_abs_difference']:.2e}"
              f"   (tolerance {item['tolerance']:g})")
    print(f"export: wrote {final} (labels.txt, export.json)")
    return final
