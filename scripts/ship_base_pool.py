"""Write an embedded model's base pool for its default settings beside its weights, so a fresh install's
first LoRA update (the README's demo) does not spend minutes sampling it. Run after retraining a generator:

    python scripts/ship_base_pool.py                  # the styled-shapes model
    python scripts/ship_base_pool.py --model digits   # or fashion

The pool is what ``LoraUpdater.base_pool`` samples for the empty prompt at the default ``UpdateConfig``;
its file name is the hash of the weights, prompts and sampler settings, so a stale pool is never used.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from edpbrl_plugin.models.digits import load_pipeline as load_class_pipeline
from edpbrl_plugin.models.shapes import load_shapes_pipeline
from edpbrl_plugin.tuning.updater import LoraUpdater


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["shapes", "digits", "fashion"], default="shapes")
    model = parser.parse_args().model
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDPBRL_CACHE"] = cache
        pipe = load_shapes_pipeline() if model == "shapes" else load_class_pipeline(model)
        target = Path(pipe.name_or_path) / "pools"
        if target.exists():
            shutil.rmtree(target)  # a pool of older weights or settings is dead weight in the wheel
        LoraUpdater(pipe, prompts=[""]).base_pool()
        (made,) = (Path(cache) / "pools").glob("*.safetensors")
        target.mkdir()
        shutil.copy(made, target / made.name)
        print(f"wrote {target / made.name}")


if __name__ == "__main__":
    main()
