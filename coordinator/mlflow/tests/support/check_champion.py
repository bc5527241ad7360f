"""Load a registered model by alias from an MLflow tracking server and predict.

    python check_champion.py <tracking_uri> <model_name> [<alias>]

Loads ``models:/<name>@<alias>`` (alias defaults to ``champion``) with both
``mlflow.pytorch.load_model`` and ``mlflow.pyfunc.load_model``, predicts a
float32 4x1x28x28 batch of zeros with each, and checks that the output is
4x10. On success prints one JSON line
``{"pytorch_shape": [4, 10], "pyfunc_shape": [4, 10], "version": "<n>"}``
and exits 0; otherwise prints a clear error to stderr and exits 1.

Basic-auth credentials come from MLFLOW_TRACKING_USERNAME / _PASSWORD (and a
bearer token from MLFLOW_TRACKING_TOKEN), which mlflow reads itself.
"""

import json
import os
import sys
import traceback
import warnings


def fail(message):
    print(f"check_champion: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def shape_of(output):
    # pytorch flavor returns a torch.Tensor; pyfunc returns a numpy array
    # (or, for some inputs, a DataFrame / dict).
    if hasattr(output, "shape"):
        return [int(d) for d in output.shape]
    if isinstance(output, dict) and len(output) == 1:
        return shape_of(next(iter(output.values())))
    raise TypeError(f"prediction of unexpected type {type(output).__name__}")


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        fail(f"expected 2 or 3 arguments, got {len(argv) - 1}")
    tracking_uri, name = argv[1], argv[2]
    alias = argv[3] if len(argv) == 4 else "champion"
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    try:
        import mlflow
        import mlflow.pyfunc
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow import MlflowClient
    except Exception as e:  # noqa: BLE001
        fail(f"cannot import mlflow/torch/numpy with {sys.executable}: {e}")

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    uri = f"models:/{name}@{alias}"
    expected = [4, 10]

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    except Exception as e:  # noqa: BLE001
        fail(f"{uri}: cannot resolve alias {alias!r} of registered model {name!r} at {tracking_uri}: {e}")

    batch = np.zeros((4, 1, 28, 28), dtype=np.float32)

    try:
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(batch))
        pytorch_shape = shape_of(out)
    except Exception:  # noqa: BLE001
        fail(f"mlflow.pytorch.load_model({uri!r}) / predict failed:\n{traceback.format_exc()}")
    if pytorch_shape != expected:
        fail(f"mlflow.pytorch model {uri} returned shape {pytorch_shape}, expected {expected}")

    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
        out = pyfunc.predict(batch)
        pyfunc_shape = shape_of(out)
    except Exception:  # noqa: BLE001
        fail(f"mlflow.pyfunc.load_model({uri!r}) / predict failed:\n{traceback.format_exc()}")
    if pyfunc_shape != expected:
        fail(f"mlflow.pyfunc model {uri} returned shape {pyfunc_shape}, expected {expected}")

    print(json.dumps({"pytorch_shape": pytorch_shape, "pyfunc_shape": pyfunc_shape, "version": str(version)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
