// trm-serve page. Plain ES2020, no build step, no dependencies; talks to the public HTTP API only:
// GET /v1/models (what is served, grid sizes, each model card's recipe), GET /openapi.json (which options
// the server takes), POST /v1/<task>/solve with return_steps, GET /v1/stats (live panel).
// The options start from the chosen model's recipe when it has one (the API's own default is one view):
// a newcomer's hard puzzle gets the model card's settings, and the request posts what the form shows.
"use strict";

const $ = (sel) => document.querySelector(sel);
const ARC_PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B",
  "#7FDBFF", "#870C25"];
const ARC_NAMES = ["black", "blue", "red", "green", "yellow", "grey", "magenta", "orange", "sky", "maroon"];
const TASKS = ["sudoku", "maze", "arc"];
const API_DEFAULTS = {halting: "", max_steps: "", views: ""}; // empty fields: the server's defaults

const state = {
  task: "sudoku",
  models: [],
  modelChoice: {}, // task -> chosen model name
  shownModel: null, // the model whose options the form holds
  formFor: {}, // model name -> the options the user left for it ({halting, max_steps, views} as typed)
  optionSchemas: {}, // task -> the solve request's JSON schema properties (from OpenAPI)
  sudoku: Array(81).fill(""), // one char per cell, "" blank
  sudokuFocus: 0,
  maze: null, // {rows, cols, cells: [chars]}
  mazeFocus: 0,
  arcTask: null,
  result: null, // {task, response, puzzle, trajectories, confidences}
  step: 1,
  playing: null,
  examples: null,
};

// ---- HTTP ---------------------------------------------------------------------------------------
function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = sessionStorage.getItem("trm-key");
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

async function api(method, path, body) {
  const resp = await fetch(path, {method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  return {status: resp.status, ok: resp.ok, data};
}

// ---- boards -------------------------------------------------------------------------------------
// A board is a CSS grid of `rows x cols` cells built once per shape; `paint` updates it in place.
function makeBoard(container, rows, cols, make) {
  container.style.setProperty("--rows", rows);
  container.style.setProperty("--cols", cols);
  if (container.childElementCount !== rows * cols || container.dataset.shape !== `${rows}x${cols}`) {
    container.replaceChildren();
    for (let i = 0; i < rows * cols; i++) container.appendChild(make(i));
    container.dataset.shape = `${rows}x${cols}`;
  }
  return Array.from(container.children);
}

function divCell() {
  const d = document.createElement("div");
  d.className = "cell";
  return d;
}

function paintArc(container, grid, previous) {
  const rows = grid.length, cols = rows ? grid[0].length : 0;
  container.classList.add("board", "arc");
  const cells = makeBoard(container, Math.max(rows, 1), Math.max(cols, 1), divCell);
  const sameShape = previous && previous.length === rows && rows && previous[0].length === cols;
  cells.forEach((cell, i) => {
    const r = Math.floor(i / Math.max(cols, 1)), c = i % Math.max(cols, 1);
    const v = rows ? grid[r][c] : 0;
    cell.style.background = ARC_PALETTE[v] || "#fff";
    cell.title = `row ${r}, column ${c}: ${ARC_NAMES[v] || v}`;
    cell.classList.toggle("changed", Boolean(previous) && (!sameShape || previous[r][c] !== v));
  });
  container.setAttribute("aria-label", rows ? `${rows} by ${cols} grid` : "empty grid");
}

// Violation texts name cells as "row R, column C"; pull every such pair out.
function cellsNamed(text) {
  const out = [];
  for (const m of String(text).matchAll(/row (\d+), column (\d+)/g)) out.push([Number(m[1]), Number(m[2])]);
  return out;
}

// ---- Sudoku editor ------------------------------------------------------------------------------
// Thick lines between the 3x3 boxes: classes for the cells on a box's right (bx) or bottom (by) edge.
function boxEdges(i) {
  const r = Math.floor(i / 9), c = i % 9;
  return `${c === 2 || c === 5 ? "bx" : ""} ${r === 2 || r === 5 ? "by" : ""}`.trim();
}

function buildSudokuEditor() {
  const grid = $("#sudoku-grid");
  const cells = makeBoard(grid, 9, 9, (i) => {
    const input = document.createElement("input");
    const r = Math.floor(i / 9), c = i % 9;
    input.className = `cell ${boxEdges(i)}`;
    input.type = "text";
    input.maxLength = 1;
    input.inputMode = "numeric";
    input.autocomplete = "off";
    input.setAttribute("role", "gridcell");
    input.setAttribute("aria-label", `row ${r + 1}, column ${c + 1}`);
    input.dataset.index = i;
    input.tabIndex = i === 0 ? 0 : -1;
    input.addEventListener("keydown", sudokuKey);
    input.addEventListener("input", sudokuInput);
    input.addEventListener("paste", sudokuPaste);
    input.addEventListener("focus", () => focusSudoku(i, false));
    return input;
  });
  return cells;
}

function paintSudokuEditor() {
  const cells = Array.from($("#sudoku-grid").children);
  cells.forEach((input, i) => {
    input.value = state.sudoku[i];
  });
}

function focusSudoku(i, move = true) {
  const cells = $("#sudoku-grid").children;
  cells[state.sudokuFocus].tabIndex = -1;
  state.sudokuFocus = i;
  cells[i].tabIndex = 0;
  if (move) cells[i].focus();
}

function setSudokuCell(i, ch) {
  state.sudoku[i] = ch;
  const input = $("#sudoku-grid").children[i];
  input.value = ch;
  input.classList.remove("error");
  input.removeAttribute("title");
}

function moveFocus(i, key, rows, cols) {
  const r = Math.floor(i / cols), c = i % cols;
  if (key === "ArrowUp") return ((r + rows - 1) % rows) * cols + c;
  if (key === "ArrowDown") return ((r + 1) % rows) * cols + c;
  if (key === "ArrowLeft") return r * cols + (c + cols - 1) % cols;
  if (key === "ArrowRight") return r * cols + (c + 1) % cols;
  if (key === "Home") return r * cols;
  if (key === "End") return r * cols + cols - 1;
  return null;
}

function sudokuKey(ev) {
  const i = Number(ev.target.dataset.index);
  const next = moveFocus(i, ev.key, 9, 9);
  if (next !== null) { ev.preventDefault(); focusSudoku(next); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.key === "Tab") return;
  if (/^[1-9]$/.test(ev.key)) { ev.preventDefault(); setSudokuCell(i, ev.key); focusSudoku(moveFocus(i, "ArrowRight", 9, 9)); return; }
  if (["0", ".", " ", "Backspace", "Delete"].includes(ev.key)) { ev.preventDefault(); setSudokuCell(i, ""); return; }
  if (ev.key.length === 1) ev.preventDefault(); // nothing else is a Sudoku digit
}

function sudokuInput(ev) { // soft keyboards that bypass keydown
  const i = Number(ev.target.dataset.index);
  const ch = ev.target.value.slice(-1);
  setSudokuCell(i, /^[1-9]$/.test(ch) ? ch : "");
}

function sudokuPaste(ev) {
  const text = (ev.clipboardData || window.clipboardData).getData("text");
  ev.preventDefault();
  loadSudokuString(text, Number(ev.target.dataset.index));
}

// Pasted text fills cells in order from `start` (the whole grid for 81 characters). Characters the
// editor would not type are kept as they are, so the server's 422 names exactly that cell.
function loadSudokuString(text, start = 0) {
  const chars = Array.from(String(text).replace(/\s+/g, ""));
  if (chars.length >= 81) start = 0;
  chars.slice(0, 81 - start).forEach((ch, k) => setSudokuCell(start + k, ch === "." || ch === "0" ? "" : ch));
  clearMarks();
}

function sudokuString() {
  return state.sudoku.map((ch) => ch || ".").join("");
}

async function randomSudoku() {
  if (!state.examples) {
    const r = await fetch("/static/sudoku-examples.json");
    state.examples = await r.json();
  }
  const level = $("#sudoku-difficulty").value;
  const list = state.examples.difficulties[level];
  const pick = list[Math.floor(Math.random() * list.length)];
  loadSudokuString(pick.puzzle);
  $("#sudoku-string").value = pick.puzzle;
  $("#sudoku-source").textContent = `${level}: ${pick.source} row ${pick.row}, rating ${pick.rating} ` +
    `(guesses an exact solver needed)`;
}

// Rule breaks of a Sudoku answer, as cell indices (the same rules as the server's check), so the
// replay can show them shrinking step by step; the final step shows the server's own violations.
function sudokuBadCells(puzzle, grid) {
  const flat = grid.flat();
  const bad = new Set();
  flat.forEach((v, i) => {
    const given = Number(puzzle[i]) || 0;
    if (v === 0 || (given && v !== given)) bad.add(i);
  });
  const units = [];
  for (let k = 0; k < 9; k++) {
    units.push([...Array(9).keys()].map((j) => k * 9 + j));
    units.push([...Array(9).keys()].map((j) => j * 9 + k));
    const br = Math.floor(k / 3) * 3, bc = (k % 3) * 3;
    units.push([...Array(9).keys()].map((j) => (br + Math.floor(j / 3)) * 9 + bc + (j % 3)));
  }
  for (const unit of units) {
    const seen = {};
    for (const i of unit) if (flat[i]) (seen[flat[i]] = seen[flat[i]] || []).push(i);
    for (const cells of Object.values(seen)) if (cells.length > 1) cells.forEach((i) => bad.add(i));
  }
  return bad;
}

// ---- Maze editor --------------------------------------------------------------------------------
function mazeModelShape() {
  const m = chosenModel("maze");
  return m ? {rows: m.grid[0], cols: m.grid[1]} : null;
}

function newMaze(rows, cols) {
  state.maze = {rows, cols, cells: Array(rows * cols).fill(" ")};
  state.maze.cells[0] = "S";
  state.maze.cells[rows * cols - 1] = "G";
  state.mazeFocus = 0;
}

function buildMazeEditor() {
  const {rows, cols} = state.maze;
  const grid = $("#maze-grid");
  makeBoard(grid, rows, cols, (i) => {
    const d = divCell();
    d.setAttribute("role", "gridcell");
    d.dataset.index = i;
    d.tabIndex = i === state.mazeFocus ? 0 : -1;
    d.addEventListener("click", () => { focusMaze(i); applyMazeTool(i); });
    d.addEventListener("keydown", mazeKey);
    return d;
  });
  $("#maze-size").textContent = `${rows} x ${cols}, the size model ${chosenModel("maze").name} works on`;
  paintMazeEditor();
}

function mazeClass(ch) {
  return {"#": "wall", "S": "start", "G": "goal", "o": "path"}[ch] || "open";
}

function mazeLabel(ch) {
  return {"#": "wall", "S": "start", "G": "goal", "o": "path", " ": "open"}[ch] || ch;
}

function paintMazeEditor() {
  const {rows, cols, cells} = state.maze;
  Array.from($("#maze-grid").children).forEach((d, i) => {
    const ch = cells[i];
    d.className = `cell ${mazeClass(ch)}`;
    d.textContent = ch === "S" || ch === "G" ? ch : "";
    d.setAttribute("aria-label", `row ${Math.floor(i / cols) + 1}, column ${(i % cols) + 1}: ${mazeLabel(ch)}`);
  });
  $("#maze-grid").setAttribute("aria-rowcount", rows);
}

function mazeTool() {
  return document.querySelector('input[name="maze-tool"]:checked').value;
}

function applyMazeTool(i) {
  const tool = mazeTool();
  const cells = state.maze.cells;
  if (tool === "#") {
    if (cells[i] === "S" || cells[i] === "G") return;
    cells[i] = cells[i] === "#" ? " " : "#";
  } else { // one start and one goal: placing moves it
    const old = cells.indexOf(tool);
    if (old >= 0) cells[old] = " ";
    cells[i] = tool;
  }
  clearMarks();
  paintMazeEditor();
}

function focusMaze(i, move = true) {
  const cells = $("#maze-grid").children;
  if (cells[state.mazeFocus]) cells[state.mazeFocus].tabIndex = -1;
  state.mazeFocus = i;
  cells[i].tabIndex = 0;
  if (move) cells[i].focus();
}

function mazeKey(ev) {
  const i = Number(ev.currentTarget.dataset.index);
  const next = moveFocus(i, ev.key, state.maze.rows, state.maze.cols);
  if (next !== null) { ev.preventDefault(); focusMaze(next); return; }
  const tools = {w: "#", s: "S", g: "G"};
  if (tools[ev.key.toLowerCase()]) {
    document.querySelector(`input[name="maze-tool"][value="${tools[ev.key.toLowerCase()]}"]`).checked = true;
    ev.preventDefault();
    return;
  }
  if (ev.key === " " || ev.key === "Enter") { ev.preventDefault(); applyMazeTool(i); }
}

// A random maze in the training data's style: random walls on 30-50% of the cells, S and G far
// apart (at least 2.8 grid sides of moves when the layout allows, as the bundled maze data).
function exampleMaze(rows, cols) {
  const n = rows * cols;
  const target = Math.round(2.8 * (rows + cols) / 2);
  let best = null;
  for (let attempt = 0; attempt < 400; attempt++) {
    const cells = Array(n).fill(" ");
    const numWalls = Math.floor(n * (0.3 + 0.2 * Math.random()));
    const order = [...Array(n).keys()].sort(() => Math.random() - 0.5);
    order.slice(0, numWalls).forEach((i) => { cells[i] = "#"; });
    const open = order.slice(numWalls);
    const s = open[Math.floor(Math.random() * open.length)];
    const dist = Array(n).fill(-1);
    dist[s] = 0;
    const queue = [s];
    for (let q = 0; q < queue.length; q++) {
      const i = queue[q], r = Math.floor(i / cols), c = i % cols;
      for (const [dr, dc] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
        const rr = r + dr, cc = c + dc, j = rr * cols + cc;
        if (rr >= 0 && rr < rows && cc >= 0 && cc < cols && cells[j] !== "#" && dist[j] < 0) {
          dist[j] = dist[i] + 1;
          queue.push(j);
        }
      }
    }
    const far = Math.max(...dist);
    if (!best || far > best.far) best = {cells, s, dist, far};
    if (far >= target) break;
  }
  const {cells, s, dist, far} = best;
  const candidates = [...dist.keys()].filter((i) => dist[i] >= Math.max(1, Math.min(target, far)));
  const g = candidates[Math.floor(Math.random() * candidates.length)];
  cells[s] = "S";
  cells[g] = "G";
  return {rows, cols, cells};
}

function mazeRows() {
  const {rows, cols, cells} = state.maze;
  return [...Array(rows).keys()].map((r) => cells.slice(r * cols, (r + 1) * cols).join(""));
}

// ---- ARC ----------------------------------------------------------------------------------------
function loadArcFile(file) {
  const reader = new FileReader();
  reader.onload = () => {
    try {
      state.arcTask = JSON.parse(reader.result);
    } catch (e) {
      showProblem({title: "Not JSON", detail: `${file.name}: ${e.message}`, errors: []});
      return;
    }
    $("#arc-name").textContent = file.name;
    clearMarks();
    renderArcTask();
  };
  reader.readAsText(file);
}

function arcBoard(grid, label) {
  const wrap = document.createElement("div");
  const board = document.createElement("div");
  board.setAttribute("role", "img");
  paintArc(board, Array.isArray(grid) ? grid : [], null);
  board.setAttribute("aria-label", `${label}: ${board.getAttribute("aria-label")}`);
  wrap.appendChild(board);
  return wrap;
}

function renderArcTask() {
  const box = $("#arc-task");
  box.replaceChildren();
  const task = state.arcTask || {};
  const pair = (title, grids) => {
    const row = document.createElement("div");
    row.className = "arc-pair";
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = title;
    row.appendChild(label);
    grids.forEach(([g, name], k) => {
      if (k) {
        const arrow = document.createElement("span");
        arrow.className = "arrow";
        arrow.textContent = "->";
        arrow.setAttribute("aria-hidden", "true");
        row.appendChild(arrow);
      }
      row.appendChild(arcBoard(g, `${title} ${name}`));
    });
    box.appendChild(row);
  };
  (task.train || []).forEach((p, i) => pair(`demonstration ${i + 1}`, [[p.input, "input"], [p.output, "output"]]));
  (task.test || []).forEach((p, i) => pair(`test ${i + 1}`, [[p.input, "input"]]));
}

// ---- options ------------------------------------------------------------------------------------
function chosenModel(task) {
  const ofTask = state.models.filter((m) => m.task === task);
  return ofTask.find((m) => m.name === state.modelChoice[task]) || ofTask.find((m) => m.is_default) || ofTask[0];
}

function renderOptions() {
  const select = $("#opt-model");
  const ofTask = state.models.filter((m) => m.task === state.task);
  select.replaceChildren(...ofTask.map((m) => {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name}${m.is_default ? " (default)" : ""}`;
    o.title = `${(m.num_params / 1e3).toFixed(0)}k parameters, ${m.grid.join("x")} grid, ${m.halt_max_steps} steps`;
    return o;
  }));
  const chosen = chosenModel(state.task);
  if (chosen) select.value = chosen.name;
  $("#opt-max_steps").placeholder = chosen ? `${chosen.halt_max_steps} (model default)` : "";
  const verified = $('#opt-halting option[value="verified"]');
  verified.disabled = state.task === "arc";
  const views = (state.optionSchemas[state.task] || {}).views;
  $("#views-field").hidden = !views;
  if (views) { // the server's own schema of the option: its description, type and bounds
    const input = $("#opt-views");
    const types = [views.type, ...(views.anyOf || []).map((t) => t.type)];
    const spec = (views.anyOf || []).find((t) => t.type === "integer") || views;
    input.type = types.includes("integer") ? "number" : "text";
    if (spec.minimum !== undefined) input.min = spec.minimum;
    $("#views-help").textContent = views.description || "";
    input.title = views.description || "";
    input.placeholder = views.default !== undefined && views.default !== null ? String(views.default) : "server default";
  }
  if (chosen && chosen.name !== state.shownModel) { // a new model: its recipe, or what the user left for it
    if (state.shownModel) state.formFor[state.shownModel] = formOptions();
    setFormOptions(state.formFor[chosen.name] || recipeOptions(chosen) || API_DEFAULTS);
    state.shownModel = chosen.name;
  }
  if (verified.disabled && $("#opt-halting").value === "verified") $("#opt-halting").value = "";
  renderRecipe();
  $("#solve").disabled = !chosen;
  $("#status").textContent = chosen ? "" : `this server serves no ${state.task} model (TRM_MODELS)`;
}

// ---- the model card's recipe --------------------------------------------------------------------
function formOptions() {
  return {halting: $("#opt-halting").value, max_steps: $("#opt-max_steps").value.trim(),
    views: $("#opt-views").value.trim()};
}

function setFormOptions(opts) {
  $("#opt-halting").value = opts.halting;
  $("#opt-max_steps").value = opts.max_steps;
  $("#opt-views").value = opts.views;
}

function recipeOptions(model) {
  const r = model && model.recipe;
  return r ? {halting: r.halting, max_steps: String(r.max_steps), views: String(r.views)} : null;
}

function describeRecipe(r) {
  const n = (k, word) => `${k} ${word}${k === 1 ? "" : "s"}`;
  return `${n(r.views, "view")}, ${n(r.max_steps, "step")}, ${r.halting} halting`;
}

function renderRecipe() { // the line under the options: what the card recommends, and whether the form holds it
  const model = chosenModel(state.task);
  const recipe = recipeOptions(model);
  $("#recipe").hidden = !recipe;
  if (!recipe) return;
  const now = formOptions();
  const inUse = Object.keys(recipe).every((k) => now[k] === recipe[k]);
  $("#recipe-text").textContent = `Model card recipe: ${describeRecipe(model.recipe)}`;
  $("#recipe-state").textContent = inUse ? "(filled in below; the API's own default is 1 view)" : "(not in use)";
  $("#recipe-toggle").textContent = inUse ? "reset to API defaults" : "use the recipe";
  $("#recipe-toggle").dataset.action = inUse ? "reset" : "recipe";
}

function toggleRecipe() {
  const model = chosenModel(state.task);
  setFormOptions($("#recipe-toggle").dataset.action === "reset" ? API_DEFAULTS : recipeOptions(model));
  renderRecipe();
}

function viewsValue() {
  const raw = $("#opt-views").value.trim();
  if (!raw) return undefined;
  try { return JSON.parse(raw); } catch (e) { return raw; }
}

function requestBody() {
  const body = {return_steps: true};
  const model = $("#opt-model").value;
  if (model) body.model = model;
  const halting = $("#opt-halting").value;
  if (halting) body.halting = halting;
  const maxSteps = $("#opt-max_steps").value.trim();
  if (maxSteps) body.max_steps = Number(maxSteps);
  if (!$("#views-field").hidden && viewsValue() !== undefined) body.views = viewsValue();
  if (state.task === "sudoku") body.puzzle = sudokuString();
  else if (state.task === "maze") body.puzzle = mazeRows();
  else body.task = state.arcTask;
  return body;
}

// ---- errors -------------------------------------------------------------------------------------
function clearMarks() {
  document.querySelectorAll(".board.editor .cell.error").forEach((c) => {
    c.classList.remove("error");
    c.removeAttribute("title");
  });
  document.querySelectorAll("#options [aria-invalid]").forEach((f) => f.removeAttribute("aria-invalid"));
  document.querySelectorAll("#options .field-error").forEach((e) => { e.textContent = ""; });
  $("#problem").hidden = true;
}

function markCell(task, r, c, msg) {
  let cell = null;
  if (task === "sudoku" && r < 9 && c < 9) cell = $("#sudoku-grid").children[r * 9 + c];
  if (task === "maze" && state.maze && r < state.maze.rows && c < state.maze.cols) {
    cell = $("#maze-grid").children[r * state.maze.cols + c];
  }
  if (!cell) return false;
  cell.classList.add("error");
  cell.title = cell.title ? `${cell.title}\n${msg}` : msg;
  return true;
}

// 422 problem+json: each error's `loc` names a field (["body", "max_steps"]) or a cell
// (["body", "puzzle", i] for the 81-character form, [..., row, column] for grids); a location that
// stops at the puzzle itself (e.g. conflicting givens) names its cells in the message.
function markErrors(problem, task) {
  for (const err of problem.errors || []) {
    const loc = err.loc || [];
    const [where, field, ...rest] = loc;
    if (where !== "body") continue;
    const input = document.querySelector(`#options [name="${field}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      $(`#err-${field}`).textContent = err.msg;
      continue;
    }
    if (field === "puzzle") {
      if (task === "sudoku" && rest.length === 1 && typeof rest[0] === "number") {
        markCell(task, Math.floor(rest[0] / 9), rest[0] % 9, err.msg);
      } else if (rest.length >= 2) {
        markCell(task, rest[0], rest[1], err.msg);
      } else {
        for (const [r, c] of cellsNamed(err.msg)) markCell(task, r, c, err.msg);
      }
    }
  }
}

function showProblem(problem, status) {
  const box = $("#problem");
  box.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = `${status ? status + " " : ""}${problem.title || "Error"}`;
  const p = document.createElement("p");
  p.textContent = problem.detail || "";
  box.append(h, p);
  if ((problem.errors || []).length) {
    const ul = document.createElement("ul");
    for (const e of problem.errors) {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = (e.loc || []).join(".");
      li.append(code, `: ${e.msg}`);
      ul.appendChild(li);
    }
    box.appendChild(ul);
  }
  box.hidden = false;
}

// ---- solve and replay ---------------------------------------------------------------------------
async function solve(ev) {
  ev.preventDefault();
  clearMarks();
  if (state.task === "arc" && !state.arcTask) {
    showProblem({title: "No task", detail: "drop or choose an ARC task JSON first", errors: []});
    return;
  }
  const task = state.task;
  const body = requestBody();
  $("#solve").disabled = true;
  $("#status").textContent = "solving...";
  try {
    const resp = await api("POST", `/v1/${task}/solve`, body);
    if (!resp.ok) {
      const problem = resp.data || {title: "Error", detail: `HTTP ${resp.status}`};
      showProblem(problem, resp.status);
      markErrors(problem, task);
      if (resp.status === 401) $("#key-box").open = true;
      $("#status").textContent = "";
      return;
    }
    $("#status").textContent = "";
    showResult(task, body, resp.data);
  } catch (e) {
    showProblem({title: "Network error", detail: String(e), errors: []});
    $("#status").textContent = "";
  } finally {
    $("#solve").disabled = false;
  }
}

function showResult(task, body, data) {
  stopPlaying();
  const trajectories = task === "arc" ? (data.trajectory || []) : [data.trajectory || [data.solution]];
  const confidences = task === "arc" ? (data.trajectory_confidence || []) : [data.trajectory_confidence || []];
  state.result = {task, body, data, trajectories, confidences, test: 0};
  $("#result-empty").hidden = true;
  $("#result-body").hidden = false;
  const valid = $("#sum-valid");
  valid.textContent = data.valid ? "yes" : "no";
  valid.className = data.valid ? "yes" : "no";
  $("#sum-steps").textContent = String(data.steps);
  $("#sum-halt").textContent = data.halt_reason;
  $("#sum-confidence").textContent = data.confidence.toFixed(3);
  const t = data.timings;
  $("#sum-time").textContent = `${ms(t.total_s)} total`;
  $("#sum-time").title = `queue ${ms(t.queue_s)}, compute ${ms(t.compute_s)}, total ${ms(t.total_s)}`;
  $("#sum-model").textContent = data.model;
  $("#sum-views-box").hidden = data.views === undefined; // servers that run symmetric views say how many
  if (data.views !== undefined) {
    $("#sum-views").textContent = String(data.views);
    $("#sum-views").title = (data.view !== undefined ? `answer from view ${data.view}` : "") +
      (data.row_steps !== undefined ? `; ${data.row_steps} ACT steps over all views` : "");
  }
  const list = $("#violations");
  list.replaceChildren(...data.violations.map((v) => {
    const li = document.createElement("li");
    li.textContent = v;
    return li;
  }));
  $("#answer-grid").className = `board answer ${task}`;
  $("#answer-grid").replaceChildren();
  renderArcAttempts(task, body, data);
  selectTest(0);
}

function ms(seconds) {
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

function renderArcAttempts(task, body, data) {
  const box = $("#arc-attempts");
  const pick = $("#arc-test");
  box.hidden = task !== "arc";
  $("#arc-test-pick").hidden = task !== "arc" || data.attempts.length < 2;
  box.replaceChildren();
  pick.replaceChildren();
  if (task !== "arc") return;
  data.attempts.forEach((attempts, i) => {
    const row = document.createElement("div");
    row.className = "arc-pair";
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = `test ${i + 1}: input, then the two attempts (votes ${data.votes[i].join(", ")})`;
    row.appendChild(label);
    row.appendChild(arcBoard(body.task.test[i].input, `test ${i + 1} input`));
    attempts.forEach((g, a) => row.appendChild(arcBoard(g, `test ${i + 1} attempt ${a + 1}`)));
    box.appendChild(row);
    const o = document.createElement("option");
    o.value = i;
    o.textContent = `test ${i + 1}`;
    pick.appendChild(o);
  });
}

function selectTest(i) {
  const res = state.result;
  res.test = i;
  const steps = res.trajectories[i] || [];
  const slider = $("#step");
  slider.max = Math.max(1, steps.length);
  slider.value = slider.max;
  showStep(Number(slider.max));
}

// The grid the model started from: the puzzle for Sudoku / Maze, the test input for ARC.
function startGrid(res) {
  if (res.task === "sudoku") {
    return [...Array(9).keys()].map((r) => Array.from(res.body.puzzle.slice(r * 9, r * 9 + 9)).map((ch) => Number(ch) || 0));
  }
  if (res.task === "maze") return res.body.puzzle;
  return res.body.task.test[res.test].input;
}

function showStep(k) {
  const res = state.result;
  const steps = res.trajectories[res.test] || [];
  if (!steps.length) return;
  state.step = k;
  const grid = steps[k - 1];
  const previous = k > 1 ? steps[k - 2] : startGrid(res);
  const isLast = k === steps.length;
  const board = $("#answer-grid");
  let changed = 0;
  if (res.task === "sudoku") {
    const puzzle = res.body.puzzle;
    const bad = isLast ? new Set() : sudokuBadCells(puzzle, grid);
    if (isLast) {
      for (const v of res.data.violations) for (const [r, c] of cellsNamed(v)) bad.add(r * 9 + c);
    }
    const cells = makeBoard(board, 9, 9, (i) => {
      const d = divCell();
      d.className = `cell ${boxEdges(i)}`;
      return d;
    });
    cells.forEach((d, i) => {
      const r = Math.floor(i / 9), c = i % 9, v = grid[r][c];
      const given = puzzle[i] !== "." && puzzle[i] !== "0";
      d.textContent = v ? String(v) : "";
      d.classList.toggle("given", given);
      d.classList.toggle("filled", !given);
      const isChanged = v !== previous[r][c];
      d.classList.toggle("changed", isChanged);
      d.classList.toggle("bad", bad.has(i));
      changed += isChanged;
    });
    $("#step-note").textContent = `${changed} cells changed since ${k > 1 ? "the previous step" : "the puzzle"}; ` +
      `${bad.size} cells break a rule${isLast ? " (the server's check)" : ""}.`;
  } else if (res.task === "maze") {
    const rows = grid.length, cols = grid[0].length;
    const bad = new Set();
    if (isLast) for (const v of res.data.violations) for (const [r, c] of cellsNamed(v)) bad.add(r * cols + c);
    const cells = makeBoard(board, rows, cols, divCell);
    cells.forEach((d, i) => {
      const r = Math.floor(i / cols), c = i % cols, ch = grid[r][c];
      d.className = `cell ${mazeClass(ch)}`;
      d.textContent = ch === "S" || ch === "G" ? ch : "";
      const isChanged = ch !== previous[r][c];
      d.classList.toggle("changed", isChanged);
      d.classList.toggle("bad", bad.has(i));
      changed += isChanged;
    });
    const path = grid.join("").split("o").length - 1;
    $("#step-note").textContent = `${path} path cells; ${changed} cells changed since ` +
      `${k > 1 ? "the previous step" : "the maze"}.`;
  } else {
    paintArc(board, grid, previous);
    changed = board.querySelectorAll(".changed").length;
    $("#step-note").textContent = `first augmented version, mapped back; ${changed} cells changed since ` +
      `${k > 1 ? "the previous step" : "the test input"}.`;
  }
  board.dataset.step = k;
  const conf = (res.confidences[res.test] || [])[k - 1];
  $("#step-label").textContent = `step ${k} of ${steps.length}` + (conf === undefined ? "" : `, conf ${conf.toFixed(2)}`);
  $("#step").setAttribute("aria-valuetext", $("#step-label").textContent);
  drawChart(res.confidences[res.test] || [], k);
}

function drawChart(confidences, current) {
  const svg = $("#chart");
  const W = 240, H = 150, L = 26, R = 8, T = 8, B = 20;
  const n = confidences.length;
  const x = (i) => L + (n <= 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (1 - v) * (H - T - B);
  const parts = [];
  parts.push(`<line x1="${L}" y1="${y(0)}" x2="${W - R}" y2="${y(0)}" stroke="#999"/>`);
  parts.push(`<line x1="${L}" y1="${y(0.5)}" x2="${W - R}" y2="${y(0.5)}" stroke="#c0261b" stroke-dasharray="4 3"/>`);
  for (const v of [0, 0.5, 1]) {
    parts.push(`<text x="${L - 4}" y="${y(v) + 4}" font-size="10" text-anchor="end" fill="#555">${v}</text>`);
  }
  if (n) {
    const pts = confidences.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    parts.push(`<polyline points="${pts}" fill="none" stroke="#2458c6" stroke-width="2"/>`);
    confidences.forEach((v, i) => {
      const on = i === current - 1;
      parts.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="${on ? 5 : 2.5}" ` +
        `fill="${on ? "#f59e0b" : "#2458c6"}" class="${on ? "current" : "point"}"><title>step ${i + 1}: ` +
        `${v.toFixed(3)}</title></circle>`);
    });
    parts.push(`<text x="${L}" y="${H - 6}" font-size="10" fill="#555">step 1</text>`);
    parts.push(`<text x="${W - R}" y="${H - 6}" font-size="10" fill="#555" text-anchor="end">step ${n}</text>`);
  } else {
    parts.push(`<text x="${W / 2}" y="${H / 2}" font-size="11" text-anchor="middle" fill="#555">` +
      `no per-step confidence from this server</text>`);
  }
  svg.innerHTML = parts.join("");
}

function stopPlaying() {
  if (state.playing) clearInterval(state.playing);
  state.playing = null;
  $("#play").textContent = "Play";
  $("#play").setAttribute("aria-label", "Play the steps");
}

function togglePlay() {
  if (state.playing) { stopPlaying(); return; }
  const slider = $("#step");
  if (Number(slider.value) >= Number(slider.max)) slider.value = 1;
  showStep(Number(slider.value));
  $("#play").textContent = "Pause";
  $("#play").setAttribute("aria-label", "Pause the replay");
  state.playing = setInterval(() => {
    const next = Number(slider.value) + 1;
    if (next > Number(slider.max)) { stopPlaying(); return; }
    slider.value = next;
    showStep(next);
  }, 450);
}

// ---- live panel ---------------------------------------------------------------------------------
async function refreshStats() {
  if (document.visibilityState === "hidden") return;
  try {
    const resp = await api("GET", "/v1/stats");
    if (!resp.ok) {
      $("#live-note").textContent = resp.status === 401 ? "needs the API key" : `stats: HTTP ${resp.status}`;
      return;
    }
    const s = resp.data;
    $("#live-queue").textContent = String(s.queue_depth);
    $("#live-active").textContent = `${s.active_slots} / ${s.slots}`;
    $("#live-rps").textContent = s.recent.requests_per_s.toFixed(2);
    $("#live-p50").textContent = s.recent.latency_p50_s === null ? "-" : ms(s.recent.latency_p50_s);
    $("#live-note").textContent = `last ${s.recent.window_s.toFixed(0)} s: ${s.recent.requests} requests, ` +
      `${s.recent.errors} errors`;
  } catch (e) {
    $("#live-note").textContent = "stats unavailable";
  }
}

// ---- tabs and start-up --------------------------------------------------------------------------
function selectTask(task, focus = false) {
  state.task = task;
  for (const t of TASKS) {
    const tab = $(`#tab-${t}`);
    tab.setAttribute("aria-selected", String(t === task));
    tab.tabIndex = t === task ? 0 : -1;
    $(`#panel-${t}`).hidden = t !== task;
  }
  if (focus) $(`#tab-${task}`).focus();
  clearMarks();
  if (task === "maze") {
    const shape = mazeModelShape();
    if (shape && (!state.maze || state.maze.rows !== shape.rows || state.maze.cols !== shape.cols)) {
      state.maze = exampleMaze(shape.rows, shape.cols);
      buildMazeEditor();
    }
    if (!shape) $("#maze-size").textContent = "this server serves no maze model";
  }
  renderOptions();
}

function schemaProperties(schemas, schema) { // an object's properties, or those of each form of a oneOf
  if (!schema) return {};
  if (schema.properties) return schema.properties;
  const forms = (schema.oneOf || schema.anyOf || []).map((f) => (f.$ref ? schemas[f.$ref.split("/").pop()] : f));
  return Object.assign({}, ...forms.map((f) => schemaProperties(schemas, f)));
}

async function loadServerInfo() {
  const resp = await api("GET", "/v1/models");
  if (resp.status === 401) {
    $("#key-box").open = true;
    showProblem({title: "API key needed", detail: "this server sets TRM_API_KEY: enter it under Options > API key",
      errors: []}, 401);
    return false;
  }
  if (!resp.ok) {
    showProblem(resp.data || {title: "Error", detail: `GET /v1/models: HTTP ${resp.status}`}, resp.status);
    return false;
  }
  state.models = resp.data.models;
  try { // which options each solve endpoint takes (e.g. `views`, when the server has them)
    const spec = await api("GET", "/openapi.json");
    const schemas = (spec.data && spec.data.components && spec.data.components.schemas) || {};
    for (const [task, name] of [["sudoku", "SudokuSolveRequest"], ["maze", "MazeSolveRequest"], ["arc", "ArcSolveRequest"]]) {
      state.optionSchemas[task] = schemaProperties(schemas, schemas[name]);
    }
  } catch (e) { /* no OpenAPI: only the options every server has */ }
  $("#problem").hidden = true;
  return true;
}

function init() {
  buildSudokuEditor();
  $("#opt-key").value = sessionStorage.getItem("trm-key") || "";
  $("#opt-key").addEventListener("change", async () => {
    sessionStorage.setItem("trm-key", $("#opt-key").value.trim());
    if (await loadServerInfo()) selectTask(state.task);
    refreshStats();
  });
  for (const t of TASKS) {
    const tab = $(`#tab-${t}`);
    tab.addEventListener("click", () => selectTask(t));
    tab.addEventListener("keydown", (ev) => {
      const k = TASKS.indexOf(t);
      if (ev.key === "ArrowRight") selectTask(TASKS[(k + 1) % 3], true);
      if (ev.key === "ArrowLeft") selectTask(TASKS[(k + 2) % 3], true);
    });
  }
  $("#sudoku-random").addEventListener("click", randomSudoku);
  $("#sudoku-clear").addEventListener("click", () => { loadSudokuString(".".repeat(81)); $("#sudoku-source").textContent = ""; });
  $("#sudoku-load").addEventListener("click", () => loadSudokuString($("#sudoku-string").value));
  $("#sudoku-string").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); loadSudokuString($("#sudoku-string").value); }
  });
  $("#maze-example").addEventListener("click", () => {
    const shape = mazeModelShape();
    if (!shape) return;
    state.maze = exampleMaze(shape.rows, shape.cols);
    clearMarks();
    buildMazeEditor();
  });
  $("#maze-clear").addEventListener("click", () => {
    const shape = mazeModelShape();
    if (!shape) return;
    newMaze(shape.rows, shape.cols);
    clearMarks();
    buildMazeEditor();
  });
  const drop = $("#arc-drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) loadArcFile(ev.dataTransfer.files[0]);
  });
  $("#arc-file").addEventListener("change", (ev) => { if (ev.target.files.length) loadArcFile(ev.target.files[0]); });
  for (const id of ["#opt-halting", "#opt-max_steps", "#opt-views"]) {
    $(id).addEventListener("input", renderRecipe);
    $(id).addEventListener("change", renderRecipe);
  }
  $("#recipe-toggle").addEventListener("click", toggleRecipe);
  $("#opt-model").addEventListener("change", () => {
    state.modelChoice[state.task] = $("#opt-model").value;
    selectTask(state.task);
  });
  $("#options").addEventListener("submit", solve);
  $("#step").addEventListener("input", () => { stopPlaying(); showStep(Number($("#step").value)); });
  $("#play").addEventListener("click", togglePlay);
  $("#arc-test").addEventListener("change", () => selectTest(Number($("#arc-test").value)));
  loadServerInfo().then((ok) => {
    if (ok) selectTask("sudoku");
    document.body.dataset.ready = "true"; // for browser tests: the model list has been read
  });
  refreshStats();
  setInterval(refreshStats, 2000);
}

document.addEventListener("DOMContentLoaded", init);
