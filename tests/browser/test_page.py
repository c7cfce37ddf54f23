"""The web page in a real Chromium against the real service: pose, solve, replay, errors, live panel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import BUNDLED_RECIPE, CARD_RECIPE
from tests.service.conftest import small_arc_tasks, sudoku_puzzles

ARC_RGB = {0: "rgb(0, 0, 0)", 1: "rgb(0, 116, 217)", 2: "rgb(255, 65, 54)", 3: "rgb(46, 204, 64)",
           4: "rgb(255, 220, 0)", 5: "rgb(170, 170, 170)", 6: "rgb(240, 18, 190)", 7: "rgb(255, 133, 27)",
           8: "rgb(127, 219, 255)", 9: "rgb(135, 12, 37)"}


def sudoku_cells(page) -> list[str]:
    return page.eval_on_selector_all("#sudoku-grid input", "cells => cells.map(c => c.value)")


def answer_digits(page) -> list[list[int]]:
    texts = page.eval_on_selector_all("#answer-grid .cell", "cells => cells.map(c => c.textContent)")
    assert len(texts) == 81
    return [[int(t or 0) for t in texts[r * 9:(r + 1) * 9]] for r in range(9)]


def test_sudoku_type_paste_solve_and_replay(page, server):
    puzzle = sudoku_puzzles(1)[0]  # a real hard puzzle from the shared data
    # keyboard: type into the grid and move with the arrows
    page.click("#sudoku-grid input >> nth=0")
    page.keyboard.press("7")  # sets the cell and moves right
    page.keyboard.press("ArrowDown")
    page.keyboard.press("3")
    cells = sudoku_cells(page)
    assert cells[0] == "7" and cells[10] == "3" and cells[1] == ""
    assert page.evaluate("document.activeElement.dataset.index") == "11"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Backspace")
    page.keyboard.press("x")  # not a digit: ignored
    assert sudoku_cells(page)[10] == ""
    # paste the real puzzle (81 characters) and solve it with a fixed budget, keeping the steps
    page.fill("#sudoku-string", puzzle)
    page.click("#sudoku-load")
    assert "".join(c or "." for c in sudoku_cells(page)) == puzzle
    page.click("#recipe-toggle")  # the bundled model's card recipe -> the API's defaults, compared below
    page.select_option("#opt-halting", "fixed")
    page.fill("#opt-max_steps", "5")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    assert page.text_content("#sum-steps") == "5" and page.text_content("#sum-halt") == "budget"
    # the page shows exactly what the API answers for the same request (the model is deterministic)
    api = httpx.post(f"{server}/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed", "max_steps": 5,
                                                         "return_steps": True}, timeout=30).json()
    assert answer_digits(page) == api["solution"]
    assert page.text_content("#sum-valid") == ("yes" if api["valid"] else "no")
    assert page.locator("#violations li").count() == len(api["violations"])
    assert page.text_content("#sum-confidence") == f"{api['confidence']:.3f}"
    # replay: the slider covers every step, the chart has one point per step
    slider = page.locator("#step")
    assert slider.get_attribute("max") == "5" and slider.input_value() == "5"
    assert page.locator("#chart circle").count() == 5
    slider.fill("1")
    slider.dispatch_event("input")
    assert answer_digits(page) == api["trajectory"][0]
    givens = sum(ch != "." for ch in puzzle)
    assert page.locator("#answer-grid .changed").count() == 81 - givens - sum(  # blanks the model filled at step 1
        v == 0 for r, row in enumerate(api["trajectory"][0]) for c, v in enumerate(row) if puzzle[r * 9 + c] == ".")
    assert page.get_attribute("#chart circle.current", "cy") == page.get_attribute("#chart circle >> nth=0", "cy")
    page.click("#play")
    page.wait_for_function("document.querySelector('#step').value === '5'", timeout=10_000)
    assert page.text_content("#step-label").startswith("step 5 of 5")
    assert answer_digits(page) == api["trajectory"][-1] == api["solution"]


def test_422_is_marked_on_the_cells_and_fields_it_names(page):
    puzzle = sudoku_puzzles(1)[0]
    bad = puzzle[:40] + "x" + puzzle[41:]  # a character the API refuses, at row 4, column 4
    page.fill("#sudoku-string", bad)
    page.click("#sudoku-load")
    page.click("#solve")
    page.wait_for_selector("#problem:not([hidden])")
    assert "422" in page.text_content("#problem h3") and "body.puzzle.40" in page.text_content("#problem")
    marked = page.eval_on_selector_all("#sudoku-grid input", "cs => cs.flatMap((c, i) => "
                                                             "c.classList.contains('error') ? [i] : [])")
    assert marked == [40]
    assert "row 4, column 4" in page.get_attribute("#sudoku-grid input >> nth=40", "title")
    # givens that break a rule: the API names the cells in the message; both get marked
    first = next(i for i in range(9) if puzzle[i] != ".")
    digit = puzzle[first]
    box = lambda c: [r * 9 + cc for r in range(3) for cc in range(c // 3 * 3, c // 3 * 3 + 3)]  # noqa: E731
    blank = next(i for i in range(9) if puzzle[i] == "." and digit not in puzzle[i::9]
                 and digit not in [puzzle[j] for j in box(i) if j != first])  # clashes in row 0 only
    clash = puzzle[:blank] + digit + puzzle[blank + 1:]
    page.fill("#sudoku-string", clash)
    page.click("#sudoku-load")
    assert page.locator("#sudoku-grid input.error").count() == 0  # loading clears old marks
    page.click("#solve")
    page.wait_for_selector("#problem:not([hidden])")
    marked = page.eval_on_selector_all("#sudoku-grid input", "cs => cs.flatMap((c, i) => "
                                                             "c.classList.contains('error') ? [i] : [])")
    assert marked == sorted([first, blank])
    # an option the API refuses is marked on its field
    page.fill("#sudoku-string", puzzle)
    page.click("#sudoku-load")
    page.fill("#opt-max_steps", "0")
    page.click("#solve")
    page.wait_for_selector("#opt-max_steps[aria-invalid='true']")
    assert page.text_content("#err-max_steps") and page.locator("#sudoku-grid input.error").count() == 0


def test_maze_editor_fits_the_served_model_and_solves(page):
    page.click("#tab-maze")
    assert page.get_attribute("#tab-maze", "aria-selected") == "true" and page.is_hidden("#panel-sudoku")
    cells = page.locator("#maze-grid .cell")
    assert cells.count() == 100  # the served maze model is 10x10 (GET /v1/models grid)
    page.click("#maze-example")
    assert page.locator("#maze-grid .start").count() == 1 and page.locator("#maze-grid .goal").count() == 1
    page.click("#maze-clear")
    assert page.locator("#maze-grid .wall").count() == 0
    cells.nth(12).click()  # wall tool by default
    assert "wall" in cells.nth(12).get_attribute("class")
    cells.nth(12).press("Enter")  # keyboard toggles it back
    assert "wall" not in cells.nth(12).get_attribute("class")
    cells.nth(12).press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "13"
    page.keyboard.press("g")  # goal tool, then place it
    page.keyboard.press(" ")
    assert page.locator("#maze-grid .goal").count() == 1 and "goal" in cells.nth(13).get_attribute("class")
    page.fill("#opt-max_steps", "3")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    assert page.text_content("#sum-steps") == "3" and page.locator("#answer-grid .cell").count() == 100
    assert page.get_attribute("#step", "max") == "3"


def test_arc_task_file_drawn_in_the_arc_palette_and_solved(page, tmp_path):
    name, task = next(iter(small_arc_tasks(1).items()))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(task))
    page.click("#tab-arc")
    assert page.locator("#opt-halting option[value='verified']").is_disabled()
    page.set_input_files("#arc-file", str(path))
    page.wait_for_selector("#arc-task .arc-pair")
    assert page.locator("#arc-task .arc-pair").count() == len(task["train"]) + len(task["test"])
    first = page.locator("#arc-task .board >> nth=0")
    grid = task["train"][0]["input"]
    colours = first.locator(".cell").evaluate_all("cs => cs.map(c => c.style.backgroundColor)")
    assert colours == [ARC_RGB[v] for row in grid for v in row]
    page.fill("#opt-max_steps", "2")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    assert page.locator("#arc-attempts .arc-pair").count() == len(task["test"])
    assert page.get_attribute("#step", "max") == "2" and page.locator("#chart circle").count() == 2


def test_views_option_and_live_panel(page, server):
    # the server's OpenAPI advertises `views`, so the page offers it and reports what ran
    schemas = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    forms = [schemas[ref["$ref"].split("/")[-1]] for ref in schemas["SudokuSolveRequest"]["oneOf"]]
    assert all("views" in form["properties"] for form in forms)
    assert page.is_visible("#opt-views")
    page.fill("#sudoku-string", sudoku_puzzles(1)[0])
    page.click("#sudoku-load")
    page.select_option("#opt-halting", "fixed")
    page.fill("#opt-views", "2")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    assert page.is_visible("#sum-views") and page.text_content("#sum-views") == "2"
    assert page.get_attribute("#sum-views", "title").startswith("answer from view ")
    page.wait_for_function("document.querySelector('#live-p50').textContent.endsWith('ms')", timeout=10_000)
    assert page.text_content("#live-active").endswith("/ 32")  # 4 models x TRM_MAX_BATCH=8 slots
    assert float(page.text_content("#live-rps")) > 0


def _posted_bodies(page) -> list[dict]:
    """Every solve request body the page sends, in order (filled as requests go out)."""
    bodies: list[dict] = []
    page.on("request", lambda req: bodies.append(json.loads(req.post_data))
            if req.method == "POST" and req.url.endswith("/v1/sudoku/solve") else None)
    return bodies


def _options(page) -> dict[str, str]:
    return {"halting": page.input_value("#opt-halting"), "max_steps": page.input_value("#opt-max_steps"),
            "views": page.input_value("#opt-views")}


def test_a_model_with_a_recipe_prefills_the_options_and_the_request_posts_them(page):
    bodies = _posted_bodies(page)
    recipe = {k: str(v) for k, v in CARD_RECIPE.items()}
    api_defaults = {"halting": "", "max_steps": "", "views": ""}
    # the bundled model's card recipe is what a newcomer starts from
    bundled = {k: str(v) for k, v in BUNDLED_RECIPE.items()}
    assert _options(page) == bundled and page.is_visible("#recipe")
    assert page.text_content("#recipe-text") == "Model card recipe: 128 views, 16 steps, verified halting"
    page.select_option("#opt-model", "sudoku-card")
    assert _options(page) == recipe
    assert page.is_visible("#recipe")
    assert page.text_content("#recipe-text") == "Model card recipe: 4 views, 3 steps, verified halting"
    assert page.text_content("#recipe-toggle") == "reset to API defaults"
    page.fill("#sudoku-string", sudoku_puzzles(1)[0])
    page.click("#sudoku-load")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    assert {k: bodies[-1][k] for k in CARD_RECIPE} == CARD_RECIPE and bodies[-1]["model"] == "sudoku-card"
    assert page.text_content("#sum-views") == "4" and page.text_content("#sum-steps") == "3"
    # the user's change is what gets posted; the line says the recipe is no longer in use
    page.fill("#opt-views", "2")
    assert page.text_content("#recipe-state") == "(not in use)"
    assert page.text_content("#recipe-toggle") == "use the recipe"
    page.click("#solve")
    page.wait_for_function("document.querySelector('#sum-views').textContent === '2'")
    assert bodies[-1]["views"] == 2 and bodies[-1]["max_steps"] == 3
    # another model and back: each keeps its own options
    page.select_option("#opt-model", "sudoku")
    assert _options(page) == bundled and page.is_visible("#recipe")
    page.select_option("#opt-model", "sudoku-card")
    assert _options(page) == {**recipe, "views": "2"}
    page.click("#recipe-toggle")  # use the recipe
    assert _options(page) == recipe and page.text_content("#recipe-toggle") == "reset to API defaults"
    page.click("#recipe-toggle")  # reset to API defaults: the request carries none of the three options
    assert _options(page) == api_defaults
    page.click("#solve")
    page.wait_for_function("document.querySelector('#sum-views').textContent === '1'")
    assert not set(CARD_RECIPE) & set(bodies[-1]) and len(bodies) == 3


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_layout_fits_the_viewport(browser, server, width, height):
    """No horizontal scrolling at desktop and phone widths. With WEB_SCREENSHOTS_DIR set, the
    screenshots of README.md and docs/api.md are written there (a real puzzle the bundled model solves, mid-replay)."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready='true']")
    page.fill("#sudoku-string", SCREENSHOT_PUZZLE)
    page.click("#sudoku-load")
    page.select_option("#opt-halting", "verified")
    page.click("#solve")
    page.wait_for_selector("#result-body:not([hidden])")
    page.locator("#step").fill("2")
    page.locator("#step").dispatch_event("input")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    out = os.environ.get("WEB_SCREENSHOTS_DIR")
    if out:
        page.wait_for_function("document.querySelector('#live-p50').textContent !== '-'", timeout=10_000)
        page.evaluate("window.scrollTo(0, 0)")
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"page-{width}x{height}.png"), full_page=width < 600)
    context.close()


# magictour_top1465.csv, first puzzle (rating 112): the bundled model solves it, verified at step 8.
SCREENSHOT_PUZZLE = "4...3.......6..8..........1....5..9..8....6...7.2........1.27..5.3....4.9........"
