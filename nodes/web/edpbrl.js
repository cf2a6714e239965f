// EDPBRL answer widget: shows a question's images on its Ask node (non-modal) with answer buttons and
// keyboard shortcuts (←/→ or 1..K, A/B, T tie, S skip, X both bad), posts the answer to /edpbrl/answer,
// restores open questions after a page reload (/edpbrl/pending) and closes on interrupt.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "EDPBRL_Ask";
const REPORT_TYPES = new Set(["EDPBRL_UpdateLoRA"]); // nodes whose ui.text (what the run did) is shown on the node
const open = new Map(); // query id -> {node, panel, detail, shownAt}

function imageUrl(image) {
  const params = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder || "", type: image.type || "temp" });
  return api.apiURL(`/view?${params}`);
}

// [button label, answer sent, keyboard shortcut]: short labels keep every button on one row of the node.
function answersFor(k) {
  const choices = k === 2
    ? [["A", "0", "←/A"], ["B", "1", "→/B"], ["Tie", "tie", "T"]]
    : Array.from({ length: k }, (_, i) => [String(i + 1), String(i), String(i + 1)]);
  return choices.concat([["Skip", "skip", "S"], [k === 2 ? "Both bad" : "All bad", "both_bad", "X"]]);
}

function panelFor(node) {
  if (node && node.edpbrlPanel) return node.edpbrlPanel;
  const panel = document.createElement("div");
  panel.className = "edpbrl-panel";
  panel.style.cssText = "display:flex;flex-direction:column;gap:4px;padding:4px;font:12px sans-serif;color:var(--input-text,#ddd);";
  if (node) {
    // The question's measured height (set in fit()), so the buttons never sit on the node's bottom edge.
    node.addDOMWidget("edpbrl_answer", "edpbrl_answer", panel, { serialize: false, hideOnZoom: false, getMinHeight: () => (panel.childElementCount ? node.edpbrlHeight || 200 : 20) });
    node.edpbrlPanel = panel;
  } else {
    // The asking node is not in this tab's graph (a run queued elsewhere): a small corner card, not a modal.
    panel.style.cssText += "position:fixed;right:12px;bottom:12px;z-index:1000;background:#222;border:1px solid #555;border-radius:6px;max-width:420px;";
    document.body.appendChild(panel);
  }
  return panel;
}

function fit(node, panel) {
  if (!node) return;
  node.edpbrlHeight = panel.scrollHeight + 8;
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size[0], width, 340), Math.max(node.size[1], height)]);
  app.graph?.setDirtyCanvas(true, true);
}

function clear(queryId, message) {
  const entry = open.get(queryId);
  if (!entry) return;
  open.delete(queryId);
  entry.panel.replaceChildren();
  if (message) {
    const note = document.createElement("div");
    note.textContent = message;
    entry.panel.appendChild(note);
  }
  if (!entry.node) entry.panel.remove();
  app.graph?.setDirtyCanvas(true, true);
}

async function submit(queryId, answer) {
  const entry = open.get(queryId);
  if (!entry) return;
  const latency = (performance.now() - entry.shownAt) / 1000;
  const buttons = entry.panel.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    const response = await api.fetchApi("/edpbrl/answer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: queryId, answer, latency }),
    });
    const body = await response.json();
    if (!response.ok || !body.ok) throw new Error(body.error || response.statusText);
    clear(queryId, `answered: ${body.label ?? body.answer}`);
  } catch (error) {
    buttons.forEach((b) => (b.disabled = false));
    entry.panel.querySelector(".edpbrl-error")?.remove();
    const note = document.createElement("div");
    note.className = "edpbrl-error";
    note.style.color = "#f66";
    note.textContent = `could not send the answer: ${error.message}`;
    entry.panel.appendChild(note);
  }
}

function show(detail) {
  if (open.has(detail.query)) return;
  const node = detail.node != null ? app.graph?.getNodeById(Number(detail.node)) : null;
  const panel = panelFor(node);
  panel.replaceChildren();
  const title = document.createElement("div");
  title.textContent = `${detail.session}: question ${detail.query} — which do you prefer?`;
  const row = document.createElement("div");
  row.style.cssText = "display:flex;gap:6px;justify-content:center;";
  (detail.images || []).forEach((image, i) => {
    const figure = document.createElement("figure");
    figure.style.cssText = "margin:0;text-align:center;cursor:pointer;";
    const img = document.createElement("img");
    img.src = imageUrl(image);
    img.style.cssText = "width:96px;height:96px;image-rendering:pixelated;object-fit:contain;border:1px solid #666;";
    const caption = document.createElement("figcaption");
    caption.textContent = detail.k === 2 ? "AB"[i] : String(i + 1);
    figure.append(img, caption);
    figure.onclick = () => submit(detail.query, String(i));
    row.appendChild(figure);
  });
  const buttons = document.createElement("div");
  buttons.style.cssText = "display:flex;gap:4px;flex-wrap:wrap;justify-content:center;";
  const choices = answersFor(detail.k);
  for (const [label, answer, key] of choices) {
    const button = document.createElement("button");
    button.textContent = label;
    button.title = `key: ${key}`;
    button.dataset.answer = answer;
    button.onclick = () => submit(detail.query, answer);
    buttons.appendChild(button);
  }
  const keys = document.createElement("div");
  keys.style.cssText = "text-align:center;opacity:0.7;font-size:11px;";
  keys.textContent = "keys: " + choices.map(([label, , key]) => `${label}: ${key}`).join(" · ");
  panel.append(title, row, buttons, keys);
  open.set(detail.query, { node, panel, detail, shownAt: performance.now() });
  fit(node, panel);
  requestAnimationFrame(() => fit(node, panel)); // again once the images have their laid-out size
}

function onKey(event) {
  if (!open.size || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
  const [queryId, entry] = Array.from(open.entries()).pop(); // the newest open question
  const k = entry.detail.k;
  const key = event.key.toLowerCase();
  const pair = k === 2;
  const keys = { arrowleft: pair ? "0" : null, a: pair ? "0" : null, arrowright: pair ? "1" : null, b: pair ? "1" : null, t: pair ? "tie" : null, s: "skip", x: "both_bad" };
  let answer = keys[key] ?? null;
  if (answer === null && /^[1-9]$/.test(key) && Number(key) <= k) answer = String(Number(key) - 1);
  if (answer === null) return;
  event.preventDefault();
  event.stopPropagation();
  submit(queryId, answer);
}

async function restorePending() {
  try {
    const response = await api.fetchApi("/edpbrl/pending");
    if (!response.ok) return;
    const body = await response.json();
    for (const detail of body.waiting || []) {
      const entry = open.get(detail.query);
      const node = detail.node != null ? app.graph?.getNodeById(Number(detail.node)) : null;
      if (entry && !entry.node && node) clear(detail.query); // move a corner card onto its node
      show(detail);
    }
  } catch (error) {
    console.warn("edpbrl: could not fetch pending questions", error);
  }
}

app.registerExtension({
  name: "edpbrl.answer",
  async setup() {
    api.addEventListener("edpbrl-query", (event) => show(event.detail));
    api.addEventListener("edpbrl-answered", (event) => clear(event.detail.query, `answered: ${event.detail.label ?? event.detail.answer}`));
    api.addEventListener("execution_interrupted", () => Array.from(open.keys()).forEach((q) => clear(q, "cancelled")));
    document.addEventListener("keydown", onKey, true);
    await restorePending();
  },
  async afterConfigureGraph() {
    await restorePending(); // a workflow loaded after a reload: show its open question on the node again
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (REPORT_TYPES.has(nodeData.name)) {
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        executed?.apply(this, arguments);
        if (!this.edpbrlReport) {
          this.edpbrlReport = document.createElement("div");
          this.edpbrlReport.style.cssText = "padding:4px;font:11px sans-serif;white-space:pre-wrap;color:var(--input-text,#ddd);";
          this.addDOMWidget("edpbrl_report", "edpbrl_report", this.edpbrlReport, { serialize: false, getMinHeight: () => 40 });
        }
        this.edpbrlReport.textContent = (message?.text || []).join("\n");
        app.graph?.setDirtyCanvas(true, true);
      };
      return;
    }
    if (nodeData.name !== NODE_TYPE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      panelFor(this);
      return result;
    };
  },
});
