"""The annotator UI in real headless Chromium (Playwright) against a live server.

An annotator logs in through the form and works every kind of item with the keyboard; the
judgments land in the database in image ids. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from PIL import Image as PILImage
from PIL import ImageDraw

from annotation.models import AlignmentAnswer, Judgment, Lease
from annotation.services.rounds import ItemSpec, round_create
from tests.annotation.builders import shown_id
from tests.factories import AlignmentQuestionFactory, AnnotatorFactory, ImageFactory, ModelVersionFactory, PromptFactory


pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}


def detailed_png(seed: int, size: int = 256) -> bytes:
    """A small image with fine detail (shapes and a stripe pattern), different for every seed."""
    rng = random.Random(seed)
    image = PILImage.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(8, size // 4)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(256) for _ in range(3)))
    for x in range(0, size, 4):
        draw.line([(x, 0), (x, size // 8)], fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_image(prompt, model_version, seed):
    data = detailed_png(seed)
    return ImageFactory(
        prompt=prompt, model_version=model_version, seed=seed,
        file=ContentFile(data, name="upload.png"), sha256=hashlib.sha256(data).hexdigest(),
    )


@pytest.fixture
def work():
    """An annotator and one open round of each kind, one item each (two for pairwise flaws)."""
    base = ModelVersionFactory(name="secret-base-model", local_path="/models/secret-base-model")
    tuned = ModelVersionFactory(name="secret-tuned-model", local_path="/models/secret-tuned-model")
    prompts = [PromptFactory(text=f"a red fox reading a newspaper, take {n}") for n in range(4)]
    pairs = [
        ItemSpec(prompt_id=p.pk, image_ids=(make_image(p, base, 1000 + n).pk, make_image(p, tuned, 2000 + n).pk))
        for n, p in enumerate(prompts[:3])
    ]
    flaws = round_create(name="flaws: secret-base-model vs secret-tuned-model", kind="pairwise",
                         criterion="visual_flaws", items=pairs[:2], k=5)
    appeal = round_create(name="appeal round", kind="pairwise", criterion="visual_appeal", items=pairs[2:], k=5)
    grid_prompt = prompts[3]
    grid = [make_image(grid_prompt, tuned, 3000 + n) for n in range(5)]
    best_worst = round_create(
        name="best-worst round", kind="best_worst",
        items=[ItemSpec(prompt_id=grid_prompt.pk, image_ids=tuple(i.pk for i in grid))], k=5,
    )
    align_prompt = PromptFactory(text="two blue birds on a wire")
    birds = AlignmentQuestionFactory(prompt=align_prompt, order=1, text="Are there birds?")
    blue = AlignmentQuestionFactory(prompt=align_prompt, order=2, text="Are the birds blue?")
    blue.parents.add(birds)
    wire = AlignmentQuestionFactory(prompt=align_prompt, order=3, text="Is there a wire?")
    alignment = round_create(
        name="alignment round", kind="alignment",
        items=[ItemSpec(prompt_id=align_prompt.pk, image_ids=(make_image(align_prompt, base, 4000).pk,))], k=5,
    )
    annotator = AnnotatorFactory(username="ann")
    return {
        "annotator": annotator, "flaws": flaws, "appeal": appeal, "best_worst": best_worst, "alignment": alignment,
        "questions": (birds, blue, wire), "models": (base, tuned),
    }


@pytest.fixture(scope="module", autouse=True)
def sync_orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; the ORM calls here stay synchronous.

    Only this module's tests run with Django's async guard relaxed.
    """
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (make browser)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, live_server):
    """A page factory: a fresh browser context at a viewport, with console messages recorded."""
    contexts = []

    def open_(viewport=DESKTOP):
        context = browser.new_context(viewport=viewport, base_url=live_server.url)
        contexts.append(context)
        page = context.new_page()
        page.console_messages = []
        page.on("console", lambda message: page.console_messages.append(message.text))
        page.on("pageerror", lambda error: page.console_messages.append(f"pageerror: {error}"))
        return page

    yield open_
    for context in contexts:
        context.close()
    server_requests_finished()


def server_requests_finished(tries=100):
    """Make sure no live-server request still holds the database before the flush after the test.

    A closed page can leave a fetch-ahead in flight whose row locks would deadlock the flush:
    wait briefly for such requests to finish, then end any connection still busy or inside a
    transaction (the live server reconnects on its next request).
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"
    with connection.cursor() as cursor:
        for _ in range(tries):
            cursor.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}")


def login(page, username="ann", landing=".dashboard"):
    """Log in through the form; wait for ``landing`` (an annotator's dashboard), or the next page to load."""
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    if landing:
        page.wait_for_selector(landing)
    else:
        page.wait_for_load_state()


def wait_for_task(page, count):
    """Wait until `count` images are on screen and decoded."""
    page.wait_for_function(
        "n => { const imgs = document.querySelectorAll('#grid .pane img');"
        " return imgs.length === n && [...imgs].every(i => i.complete && i.naturalWidth > 0); }",
        arg=count,
    )


def screen_ids(page):
    """The opaque image ids on screen, in screen order, as the image URLs carry them."""
    sources = page.eval_on_selector_all("#grid .pane img", "imgs => imgs.map(i => i.getAttribute('src'))")
    return [re.fullmatch(r"/img/([0-9a-f]+)\.png", src).group(1) for src in sources]


def transforms(page):
    return page.eval_on_selector_all("#grid .pane img", "imgs => imgs.map(i => getComputedStyle(i).transform)")


def shot(page, name, *, full_page=False):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def eventually(page, query, tries=100):
    """Poll the database while the page works: submissions go out in the background."""
    for _ in range(tries):
        result = query()
        if result:
            return result
        page.wait_for_timeout(50)
    raise AssertionError("the page never stored what it was asked to")


def no_page_scroll(page):
    return page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")


def test_annotator_completes_each_kind_with_the_keyboard(work, open_page):
    page = open_page(DESKTOP)
    api_calls = []
    page.on("request", lambda r: api_calls.append(r.url.rsplit("/api/annotate/", 1)[-1]) if "/api/annotate/" in r.url else None)
    login(page)
    # The dashboard lists every open round, without round names (they may name models).
    page.wait_for_selector(".task-card")
    assert page.locator(".task-card").count() == 4
    dashboard = page.content()
    shot(page, "dashboard-1280x800")
    assert "secret" not in dashboard
    page.click("text=Guidelines")
    page.wait_for_selector("h1:has-text('Annotation guidelines')")
    page.screenshot(path=str(ARTIFACTS / "guidelines-1280x800-full.png"), full_page=True)
    page.go_back()
    page.wait_for_selector(".task-card")

    # Pairwise, visual flaws: the left image wins with the left arrow key.
    page.click(f"a[href='/annotate/pairwise/{work['flaws'].pk}/']")
    wait_for_task(page, 2)
    assert page.locator("#prompt").count() == 0  # the prompt is never shown for pairwise items
    assert page.get_attribute("#grid .pane img >> nth=0", "alt") == "Left image"
    assert page.get_attribute("#grid .pane img >> nth=1", "alt") == "Right image"
    assert page.is_hidden("#choice-cannot_compare")
    assert no_page_scroll(page)
    shot(page, "pairwise-1280x800")
    left, right = screen_ids(page)
    # The next item is leased and its images loaded while the first one is on screen.
    page.wait_for_function("() => performance.getEntriesByType('resource').filter(e => e.name.includes('/img/')).length >= 4")
    assert [c for c in api_calls if c != "progress/"][:2] == [f"rounds/{work['flaws'].pk}/next/"] * 2
    page.keyboard.press("ArrowLeft")
    # The second item was fetched ahead: it is on screen as soon as the key is pressed.
    page.wait_for_function("ids => !document.querySelector('#grid img').src.includes(ids[0])", arg=[left])
    second_left, second_right = screen_ids(page)
    page.keyboard.press("2")  # tie
    page.wait_for_selector("#empty-state:not([hidden])")
    assert page.is_visible("text=No more work in this round")

    judgments = list(Judgment.objects.filter(round=work["flaws"], annotator=work["annotator"]).order_by("created_at"))
    assert len(judgments) == 2
    first, second = judgments
    assert (first.outcome, shown_id(first, first.winner), shown_id(first, first.loser)) == ("win", left, right)
    assert first.layout == [left, right]
    assert first.elapsed_ms > 0
    assert second.outcome == "tie" and second.layout == [second_left, second_right]

    # Pairwise, visual appeal: "cannot compare" is offered and recorded as a rejection.
    page.goto(f"/annotate/pairwise/{work['appeal'].pk}/")
    wait_for_task(page, 2)
    assert page.is_visible("#choice-cannot_compare")
    page.keyboard.press("r")
    page.wait_for_selector("#empty-state:not([hidden])")
    appeal = Judgment.objects.get(round=work["appeal"], annotator=work["annotator"])
    assert appeal.outcome == "cannot_compare" and appeal.winner is None

    # Best/worst: select with digits, assign with B and W, submit with Enter.
    page.goto(f"/annotate/best-worst/{work['best_worst'].pk}/")
    wait_for_task(page, 5)
    assert page.text_content("#prompt") == "a red fox reading a newspaper, take 3"
    assert page.get_attribute("#grid .pane img >> nth=2", "alt") == "Image 3 of 5"
    assert no_page_scroll(page)
    grid = screen_ids(page)
    assert page.is_disabled("#submit")
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.keyboard.press("2")
    page.keyboard.press("w")  # the same image cannot be both: best is cleared
    assert page.get_attribute("#grid .pane-label >> nth=1 >> .mark-best", "aria-pressed") == "false"
    page.keyboard.press("4")
    page.keyboard.press("b")
    shot(page, "best-worst-1280x800")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty-state:not([hidden])")
    chosen = Judgment.objects.get(round=work["best_worst"], annotator=work["annotator"])
    assert (shown_id(chosen, chosen.winner), shown_id(chosen, chosen.loser)) == (grid[3], grid[1])
    assert chosen.layout == grid

    # Alignment: Y/N answer the highlighted question and move on; Enter submits.
    page.goto(f"/annotate/alignment/{work['alignment'].pk}/")
    wait_for_task(page, 1)
    assert page.text_content("#prompt") == "two blue birds on a wire"
    assert no_page_scroll(page)
    page.keyboard.press("Enter")  # not everything is answered yet: nothing is sent
    page.keyboard.press("y")
    page.keyboard.press("n")
    assert page.is_disabled("#submit")
    page.keyboard.press("y")
    shot(page, "alignment-1280x800")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty-state:not([hidden])")
    birds, blue, wire = work["questions"]
    answers = dict(
        AlignmentAnswer.objects.filter(judgment__round=work["alignment"]).values_list("question_id", "answer")
    )
    assert answers == {birds.pk: True, blue.pk: False, wire.pk: True}
    assert Judgment.objects.filter(annotator=work["annotator"], undone_at__isnull=True).count() == 5
    assert not [m for m in page.console_messages if "pageerror" in m]


def test_a_no_on_a_parent_question_answers_its_children_no(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.goto(f"/annotate/alignment/{work['alignment'].pk}/")
    wait_for_task(page, 1)
    page.keyboard.press("n")  # no birds: "are the birds blue?" follows as no; the wire question is next
    assert page.get_attribute("#question-2 .no", "aria-pressed") == "true"
    assert page.get_attribute("#question-3", "aria-current") == "true"
    page.keyboard.press("y")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty-state:not([hidden])")
    birds, blue, wire = work["questions"]
    answers = dict(AlignmentAnswer.objects.values_list("question_id", "answer"))
    assert answers == {birds.pk: False, blue.pk: False, wire.pk: True}


def test_zoom_and_pan_are_synchronized_and_the_loupe_shows_on_both(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.goto(f"/annotate/pairwise/{work['flaws'].pk}/")
    wait_for_task(page, 2)
    before = transforms(page)
    assert before[0] == before[1]

    box = page.locator("#grid .pane >> nth=0").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.wheel(0, -500)
    page.wait_for_function("t => getComputedStyle(document.querySelector('#grid img')).transform !== t", arg=before[0])
    zoomed = transforms(page)
    assert zoomed[0] == zoomed[1] != before[0]

    # Dragging the right image pans the left one too.
    right = page.locator("#grid .pane >> nth=1").bounding_box()
    page.mouse.move(right["x"] + 200, right["y"] + 200)
    page.mouse.down()
    page.mouse.move(right["x"] + 120, right["y"] + 150, steps=4)
    page.mouse.up()
    panned = transforms(page)
    assert panned[0] == panned[1] != zoomed[0]

    # Keys: + zooms in, 0 fits again.
    page.keyboard.press("+")
    assert transforms(page)[0] == transforms(page)[1] != panned[0]
    page.keyboard.press("0")
    assert transforms(page) == before

    # The loupe appears at the same place of both images.
    page.keyboard.press("l")
    page.mouse.move(box["x"] + 100, box["y"] + 120)
    loupes = page.eval_on_selector_all(
        "#grid .loupe", "ls => ls.map(l => [getComputedStyle(l).display, l.style.left, l.style.top, l.style.backgroundPosition])"
    )
    assert loupes[0][0] == loupes[1][0] == "block"
    assert loupes[0][1:] == loupes[1][1:]
    shot(page, "pairwise-loupe-1280x800")


def test_undo_puts_the_last_item_back(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.goto(f"/annotate/pairwise/{work['flaws'].pk}/")
    wait_for_task(page, 2)
    first = screen_ids(page)
    page.keyboard.press("3")
    page.wait_for_function("id => !document.querySelector('#grid img').src.includes(id)", arg=first[0])
    page.wait_for_function("() => !document.querySelector('#undo').disabled")
    judgment = Judgment.objects.get(annotator=work["annotator"])
    page.keyboard.press("u")
    page.wait_for_function("id => document.querySelector('#grid img').src.includes(id)", arg=first[0])
    assert screen_ids(page) == first  # same item, same layout
    judgment.refresh_from_db()
    assert judgment.undone_at is not None
    page.keyboard.press("1")
    redo = eventually(page, lambda: Judgment.objects.filter(annotator=work["annotator"], undone_at__isnull=True).first())
    assert shown_id(redo, redo.winner) == first[0]


def test_s_skips_an_item_with_a_reason_and_it_never_comes_back(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.goto(f"/annotate/pairwise/{work['flaws'].pk}/")
    wait_for_task(page, 2)
    first = screen_ids(page)
    page.keyboard.press("s")
    page.wait_for_selector("#skip-chooser:not([hidden])")
    shot(page, "skip-chooser-1280x800")
    page.keyboard.press("Escape")  # cancelled: nothing is sent, the item stays
    page.wait_for_selector("#skip-chooser", state="hidden")
    assert screen_ids(page) == first
    assert not Lease.objects.filter(annotator=work["annotator"], state=Lease.State.SKIPPED).exists()
    page.keyboard.press("S")
    page.keyboard.press("2")  # the second reason: cannot judge; 2 is not "tie" while the chooser is open
    page.wait_for_function("id => !document.querySelector('#grid img').src.includes(id)", arg=first[0])
    skipped = eventually(page, lambda: Lease.objects.filter(annotator=work["annotator"], state=Lease.State.SKIPPED).first())
    assert skipped.skip_reason == "cannot_judge"
    assert not Judgment.objects.filter(annotator=work["annotator"]).exists()
    page.keyboard.press("1")  # the other item is judged; the skipped one is not offered again
    page.wait_for_selector("#empty-state:not([hidden])")
    judged = eventually(page, lambda: Judgment.objects.filter(annotator=work["annotator"]).first())
    assert judged.item_id != skipped.item_id

    page.goto(f"/annotate/best-worst/{work['best_worst'].pk}/")  # 1 picks a reason here too, not an image
    wait_for_task(page, 5)
    page.keyboard.press("s")
    page.keyboard.press("1")
    page.wait_for_selector("#empty-state:not([hidden])")
    assert eventually(page, lambda: Lease.objects.filter(
        annotator=work["annotator"], round=work["best_worst"], skip_reason="image_does_not_load"
    ).exists())


def test_leaving_an_item_and_coming_back_from_the_dashboard_resumes_it(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.goto(f"/annotate/pairwise/{work['appeal'].pk}/")  # one item: it is leased to this page
    wait_for_task(page, 2)
    shown = screen_ids(page)
    page.goto("/")
    page.click(f"a[href='/annotate/pairwise/{work['appeal'].pk}/']")
    wait_for_task(page, 2)
    assert screen_ids(page) == shown  # same item, same left/right


def test_a_submission_whose_answer_was_lost_is_retried_and_stored_once(work, open_page):
    page = open_page(DESKTOP)
    login(page)
    sent = []

    def lose_first_answer(route):
        sent.append(route.request.post_data_json["client_uuid"])
        response = route.fetch()  # the server stores the judgment...
        if len(sent) == 1:
            route.fulfill(status=502, body="")  # ...but the answer never reaches the browser
        else:
            route.fulfill(response=response)

    page.route("**/api/annotate/submit/", lose_first_answer)
    page.goto(f"/annotate/pairwise/{work['appeal'].pk}/")
    wait_for_task(page, 2)
    page.keyboard.press("3")
    page.wait_for_selector("#empty-state:not([hidden])")
    assert len(sent) == 2 and sent[0] == sent[1]
    assert Judgment.objects.filter(annotator=work["annotator"]).count() == 1
    assert page.is_enabled("#undo")
    page.unroute_all(behavior="ignoreErrors")


def test_pages_reveal_no_model_name_path_or_seed(work, open_page):
    page = open_page(DESKTOP)
    requests, bodies = [], []
    page.on("request", lambda request: requests.append(request.url))

    def record(route):
        if route.request.resource_type not in ("document", "fetch", "xhr"):
            return route.continue_()
        response = route.fetch()
        bodies.append(response.text())
        route.fulfill(response=response)

    login(page)
    page.route("**/*", record)
    base, tuned = work["models"]
    secrets = [base.name, tuned.name, base.local_path, tuned.local_path, "seed"]
    for path, count in [
        (f"/annotate/pairwise/{work['flaws'].pk}/", 2),
        (f"/annotate/best-worst/{work['best_worst'].pk}/", 5),
        (f"/annotate/alignment/{work['alignment'].pk}/", 1),
    ]:
        page.goto(path)
        wait_for_task(page, count)
        html = page.content()
        for secret in secrets:
            assert secret not in html
    assert any('"task": {' in body or '"task":{' in body for body in bodies)
    scripts = [path.read_text() for path in (Path(__file__).resolve().parents[2] / "static").rglob("*.js")]
    everything = " ".join(bodies + scripts + requests + page.console_messages)
    for secret in secrets:
        assert secret not in everything
    page.unroute_all(behavior="ignoreErrors")  # a fetch-ahead may still be in flight


@pytest.mark.parametrize("kind, count", [("pairwise", 2), ("best-worst", 5), ("alignment", 1)])
def test_tablet_layout(work, open_page, kind, count):
    page = open_page(TABLET)
    login(page)
    round_ = {"pairwise": work["flaws"], "best-worst": work["best_worst"], "alignment": work["alignment"]}[kind]
    page.goto(f"/annotate/{kind}/{round_.pk}/")
    wait_for_task(page, count)
    shot(page, f"{kind}-820x1180")
    assert no_page_scroll(page)
    # Every image is fully inside the viewport and at least a third of its width.
    boxes = [page.locator(f"#grid .pane >> nth={i}").bounding_box() for i in range(count)]
    for box in boxes:
        assert box["y"] + box["height"] <= TABLET["height"]
        assert box["width"] >= TABLET["width"] / 3 - 20
