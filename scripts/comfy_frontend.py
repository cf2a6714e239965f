"""Drive a running ComfyUI's real frontend in headless Chromium (Playwright): build the shared workflows
node by node and save what the frontend serializes (UI format) and queues (API format), take
screenshots, and run a workflow end to end by clicking an answer in the EDPBRL widget.

Developer tool, not part of the package or CI (it needs ComfyUI, Chromium and Playwright):

    python scripts/comfy_frontend.py capture  --url http://127.0.0.1:8188 --out workflows
    python scripts/comfy_frontend.py run workflows/edpbrl_loop_embedded.json --url http://127.0.0.1:8188 --answer A
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Each workflow: nodes (id, type, position, widget values by name) and links (from id, output slot, to id, input name).
LOOP_SLOTS = "red, orange, yellow, green, cyan, blue, purple, pink\ncircle, square, triangle, star\nfilled, outline\nwhite, black, grey, navy"

WORKFLOWS = {
    "edpbrl_loop_embedded": {
        "description": "One queue run = one round: sample candidates from the session's latest LoRA, pick the most informative pair, ask, record, update the LoRA, show the status.",
        "nodes": [
            (1, "EDPBRL_LoadPipeline", (40, 60), {"model": "embedded", "resume_session": "my-taste"}),
            (2, "EDPBRL_FeatureEncoder", (40, 260), {"encoder": "embedded"}),
            (
                3,
                "EDPBRL_SampleCandidates",
                (420, 60),
                {"session": "my-taste", "prompt": "", "count": 16, "seed": 0, "steps": 20, "guidance": 2.0},
            ),
            (4, "EDPBRL_SelectQuery", (850, 60), {"k": 2, "strategy": "d_optimal"}),
            (5, "EDPBRL_Ask", (1230, 60), {"mode": "wait", "timeout_s": 0, "on_timeout": "leave pending"}),
            (6, "EDPBRL_RecordAnswer", (1630, 60), {}),
            (
                7,
                "EDPBRL_UpdateLoRA",
                (1630, 260),
                {
                    "method": "default",
                    "steps": 60,
                    "learning_rate": "default",
                    "distill_samples": 0,
                    "drift_cap": 0.5,
                    "prompt": "",
                },
            ),
            (8, "EDPBRL_SessionStatus", (2030, 60), {"session": "my-taste"}),
            (9, "PreviewImage", (2030, 360), {}),
            (10, "PreviewImage", (850, 400), {}),
        ],
        "links": [
            (1, 0, 3, "pipeline"),
            (2, 0, 3, "encoder"),
            (3, 1, 4, "candidates"),
            (4, 1, 5, "query"),
            (5, 1, 6, "answer_record"),
            (1, 0, 7, "pipeline"),
            (6, 1, 7, "reward"),
            (6, 1, 8, "reward"),
            (8, 0, 9, "images"),
            (3, 0, 10, "images"),
        ],
    },
    "edpbrl_design_loop": {
        "description": "ED-PBRL: prompts designed slot by slot by Frank-Wolfe, rendered, asked as one question, recorded; the LoRA follows.",
        "nodes": [
            (1, "EDPBRL_LoadPipeline", (40, 60), {"model": "embedded", "resume_session": "designed"}),
            (2, "EDPBRL_FeatureEncoder", (40, 260), {"encoder": "embedded"}),
            (
                3,
                "EDPBRL_DesignPrompts",
                (420, 60),
                {
                    "session": "designed",
                    "slots": LOOP_SLOTS,
                    "base_prompt": "",
                    "k": 2,
                    "budget": 20,
                    "questions": 1,
                    "seed": 0,
                    "adaptive": True,
                },
            ),
            (
                4,
                "EDPBRL_SampleCandidates",
                (940, 60),
                {"session": "designed", "prompt": "", "count": 2, "seed": 0, "steps": 20, "guidance": 2.0},
            ),
            (5, "EDPBRL_SelectQuery", (1320, 60), {"k": 2, "strategy": "d_optimal"}),
            (6, "EDPBRL_Ask", (1700, 60), {"mode": "wait", "timeout_s": 0, "on_timeout": "leave pending"}),
            (7, "EDPBRL_RecordAnswer", (2080, 60), {}),
            (
                8,
                "EDPBRL_UpdateLoRA",
                (2080, 260),
                {
                    "method": "default",
                    "steps": 60,
                    "learning_rate": "default",
                    "distill_samples": 0,
                    "drift_cap": 0.5,
                    "prompt": "",
                },
            ),
            (9, "EDPBRL_SessionStatus", (2460, 60), {"session": "designed"}),
            (10, "PreviewImage", (2460, 360), {}),
        ],
        "links": [
            (2, 0, 3, "encoder"),
            (1, 0, 3, "pipeline"),
            (1, 0, 4, "pipeline"),
            (2, 0, 4, "encoder"),
            (3, 0, 4, "prompts"),
            (4, 1, 5, "candidates"),
            (5, 1, 6, "query"),
            (6, 1, 7, "answer_record"),
            (1, 0, 8, "pipeline"),
            (7, 1, 8, "reward"),
            (7, 1, 9, "reward"),
            (9, 0, 10, "images"),
        ],
    },
}


def _retargeted(spec: dict, description: str, widgets: dict[int, dict]) -> dict:
    """``spec``'s graph and layout with some nodes' widget values replaced (node id -> {widget: value})."""
    nodes = [(i, kind, pos, {**values, **widgets.get(i, {})}) for i, kind, pos, values in spec["nodes"]]
    return {"description": description, "nodes": nodes, "links": spec["links"]}


WORKFLOWS["edpbrl_loop_digits"] = _retargeted(
    WORKFLOWS["edpbrl_loop_embedded"],
    "PAPA's setting: the unconditional MNIST digits model shipped with the pack, read by its classifier. One queue run = one round: sample digits from the session's latest LoRA, pick the most informative pair, ask, record, update the LoRA, show the status.",
    {
        1: {"model": "embedded-digits", "resume_session": "my-digits"},
        2: {"encoder": "digits"},
        3: {"session": "my-digits", "steps": 50, "guidance": 1.0},
        8: {"session": "my-digits"},
    },
)


def native_workflows(checkpoint: str, config: str, lora_name: str) -> dict:
    """The native-graph variant: CheckpointLoader/KSampler images -> select -> ask -> record -> LoRA on our
    pipeline of the same checkpoint -> Save LoRA; and the stock LoraLoader applying the saved file."""
    sampler = {"seed": 0, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return {
        "edpbrl_native_loop": {
            "description": "Images from a native CheckpointLoader + KSampler graph -> Fisher-selected pair -> ask -> record; the LoRA update runs on our pipeline loaded from the same checkpoint and Save LoRA writes a kohya file for LoraLoader.",
            "nodes": [
                (1, "CheckpointLoaderSimple", (40, 60), {"ckpt_name": checkpoint}),
                (2, "CLIPTextEncode", (420, 60), {"text": "a castle"}),
                (3, "CLIPTextEncode", (420, 260), {"text": ""}),
                (4, "EmptyLatentImage", (420, 460), {"width": 64, "height": 64, "batch_size": 4}),
                (5, "KSampler", (800, 60), sampler),
                (6, "VAEDecode", (1180, 60), {}),
                (7, "EDPBRL_FeatureEncoder", (1180, 260), {"encoder": "embedded"}),
                (
                    8,
                    "EDPBRL_SelectQuery",
                    (1560, 60),
                    {"k": 2, "strategy": "d_optimal", "session": "native", "prompt": "a castle"},
                ),
                (9, "EDPBRL_Ask", (1940, 60), {"mode": "wait", "timeout_s": 0, "on_timeout": "leave pending"}),
                (10, "EDPBRL_RecordAnswer", (2320, 60), {}),
                (
                    11,
                    "EDPBRL_LoadPipeline",
                    (1940, 360),
                    {"model": f"checkpoints/{checkpoint}", "config": config, "resume_session": "native"},
                ),
                (
                    12,
                    "EDPBRL_UpdateLoRA",
                    (2320, 260),
                    {
                        "method": "default",
                        "steps": 60,
                        "learning_rate": "default",
                        "distill_samples": 0,
                        "drift_cap": 0.5,
                        "prompt": "a castle",
                    },
                ),
                (13, "EDPBRL_SaveLoRA", (2710, 260), {"filename_prefix": "edpbrl"}),
            ],
            "links": [
                (1, 0, 5, "model"),
                (1, 1, 2, "clip"),
                (1, 1, 3, "clip"),
                (2, 0, 5, "positive"),
                (3, 0, 5, "negative"),
                (4, 0, 5, "latent_image"),
                (5, 0, 6, "samples"),
                (1, 2, 6, "vae"),
                (6, 0, 8, "images"),
                (7, 0, 8, "encoder"),
                (8, 1, 9, "query"),
                (9, 1, 10, "answer_record"),
                (11, 0, 12, "pipeline"),
                (10, 1, 12, "reward"),
                (12, 0, 13, "pipeline"),
            ],
        },
        "edpbrl_native_apply": {
            "description": "The stock LoraLoader applies the kohya file written by Save LoRA to the native MODEL at the trained strength.",
            "nodes": [
                (1, "CheckpointLoaderSimple", (40, 60), {"ckpt_name": checkpoint}),
                (2, "LoraLoader", (420, 60), {"lora_name": lora_name, "strength_model": 1.0, "strength_clip": 1.0}),
                (3, "CLIPTextEncode", (800, 60), {"text": "a castle"}),
                (4, "CLIPTextEncode", (800, 260), {"text": ""}),
                (5, "EmptyLatentImage", (800, 460), {"width": 64, "height": 64, "batch_size": 1}),
                (6, "KSampler", (1180, 60), sampler),
                (7, "VAEDecode", (1560, 60), {}),
                (8, "PreviewImage", (1940, 60), {}),
            ],
            "links": [
                (1, 0, 2, "model"),
                (1, 1, 2, "clip"),
                (2, 0, 6, "model"),
                (2, 1, 3, "clip"),
                (2, 1, 4, "clip"),
                (3, 0, 6, "positive"),
                (4, 0, 6, "negative"),
                (5, 0, 6, "latent_image"),
                (6, 0, 7, "samples"),
                (1, 2, 7, "vae"),
                (7, 0, 8, "images"),
            ],
        },
    }


BUILD_JS = """
async (spec) => {
  const app = window.comfyAPI?.app?.app ?? window.app;
  app.graph.clear();
  const made = {};
  for (const [id, type, pos, values] of spec.nodes) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error(`unknown node type ${type}`);
    node.id = id;
    node.pos = pos;
    app.graph.add(node);
    for (const [name, value] of Object.entries(values)) {
      const widget = node.widgets?.find((w) => w.name === name);
      if (!widget) throw new Error(`${type} has no widget ${name}`);
      widget.value = value;
    }
    made[id] = node;
  }
  for (const [from, slot, to, input] of spec.links) {
    const target = made[to];
    const index = target.inputs.findIndex((i) => i.name === input);
    if (index < 0) throw new Error(`${target.type} has no input ${input}`);
    made[from].connect(slot, target, index);
  }
  app.graph.setDirtyCanvas(true, true);
  // JSON.stringify drops undefined fields exactly as the frontend's own "Save" does (null would fail its schema).
  const ui = JSON.stringify(app.graph.serialize());
  const api = JSON.stringify((await app.graphToPrompt()).output);
  return { ui, api };
}
"""


def _browser(playwright):
    return playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS[1:], headless=True)


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => (window.comfyAPI?.app?.app ?? window.app)?.graph && window.LiteGraph", timeout=60_000)
    time.sleep(2)


def capture(url: str, out: Path, specs: dict) -> None:
    from playwright.sync_api import sync_playwright

    (out / "api").mkdir(parents=True, exist_ok=True)
    (out / "screenshots").mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 2400, "height": 900})
        _open(page, url)
        for name, spec in specs.items():
            result = page.evaluate(BUILD_JS, {"nodes": spec["nodes"], "links": spec["links"]})
            ui = json.loads(result["ui"])
            ui.setdefault("extra", {})["edpbrl"] = {"description": spec["description"]}
            (out / f"{name}.json").write_text(json.dumps(ui, indent=1))
            (out / "api" / f"{name}.json").write_text(json.dumps(json.loads(result["api"]), indent=1))
            page.evaluate(
                "() => { const app = window.comfyAPI?.app?.app ?? window.app; app.canvas.ds.offset = [20, 20]; app.canvas.ds.scale = 0.62; app.graph.setDirtyCanvas(true, true); }"
            )
            time.sleep(1)
            page.screenshot(path=str(out / "screenshots" / f"{name}.png"))
            print(f"captured {name}: {len(ui['nodes'])} nodes, {len(json.loads(result['api']))} in the API prompt")
        browser.close()


RUN_JS = """
async (workflow) => {
  const app = window.comfyAPI?.app?.app ?? window.app;
  await app.loadGraphData(workflow);
  await app.queuePrompt(0, 1);
}
"""


def run_in_frontend(url: str, workflow: Path, answer: str, screenshot: Path | None, timeout: float = 900) -> dict:
    """Load a UI workflow in the real frontend, queue it, click ``answer`` in the widget, wait for the run to end."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 2400, "height": 1000})
        logs = []
        page.on("console", lambda message: logs.append(message.text))
        _open(page, url)
        before = set(json.loads(urllib.request.urlopen(f"{url}/history").read()))
        page.evaluate(RUN_JS, json.loads(workflow.read_text()))
        if page.get_by_text("Invalid workflow").count():
            logs.append("error: the frontend says " + page.get_by_text("Invalid workflow").first.inner_text()[:300])
        button = page.locator(".edpbrl-panel button", has_text=answer).first
        button.wait_for(timeout=timeout * 1000)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        button.click()
        if screenshot is not None:  # the node after the answer: it names the answer given
            page.get_by_text("answered:").first.wait_for(timeout=30_000)
            page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_answered.png")))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = json.loads(urllib.request.urlopen(f"{url}/history").read())
            done = [v for k, v in history.items() if k not in before]
            queue = json.loads(urllib.request.urlopen(f"{url}/queue").read())
            if done and not queue["queue_running"]:
                browser.close()
                return {
                    "status": done[-1]["status"],
                    "outputs": list(done[-1]["outputs"]),
                    "console_errors": [line for line in logs if "error" in line.lower()],
                }
            time.sleep(1)
        browser.close()
        raise TimeoutError("the workflow did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["capture", "run"])
    parser.add_argument("workflow", nargs="?")
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default="workflows")
    parser.add_argument("--answer", default="A")
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--native-checkpoint", default=None, help="checkpoint name for the native-graph workflows")
    parser.add_argument("--native-config", default="", help="diffusers folder of the checkpoint's architecture")
    parser.add_argument("--native-lora", default="edpbrl/edpbrl_native_v1.safetensors")
    parser.add_argument("--only", default=None, help="capture: comma list of workflow names (default: all)")
    args = parser.parse_args()
    if args.what == "capture":
        specs = dict(WORKFLOWS)
        if args.native_checkpoint:
            specs.update(native_workflows(args.native_checkpoint, args.native_config, args.native_lora))
        if args.only:
            wanted = [name.strip() for name in args.only.split(",")]
            if unknown := set(wanted) - set(specs):
                parser.error(f"--only: unknown workflow(s) {sorted(unknown)}; choose from {sorted(specs)}")
            specs = {name: specs[name] for name in wanted}
        capture(args.url, Path(args.out), specs)
    else:
        print(
            json.dumps(
                run_in_frontend(
                    args.url, Path(args.workflow), args.answer, Path(args.screenshot) if args.screenshot else None
                ),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
