"""The plugin reference (docs/plugins.md) documents every public name and every hook.

Like datasette's tests/test_docs.py: adding a name to ``goalhub.__all__`` or a hook to
``goalhub.hookspecs`` without documenting it fails here, and so does a stale section.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from bson import ObjectId

import goalhub
from goalhub import hookspecs

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "plugins.md"


def sections() -> dict[str, str]:
    """``### `name` `` heading -> the text up to the next heading."""
    text = REFERENCE.read_text()
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    out = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        if match := re.fullmatch(r"### `(\w+)`", heading.strip()):
            out[match.group(1)] = body
    return out


def hooks() -> dict[str, object]:
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, "goalhub_spec")}


@pytest.mark.parametrize("name", goalhub.__all__)
def test_public_name_is_documented(name: str) -> None:
    assert name in sections(), f"goalhub.{name} has no '### `{name}`' section in docs/plugins.md"


@pytest.mark.parametrize("hook", sorted(hooks()))
def test_hook_is_documented_with_its_version_and_arguments(hook: str) -> None:
    section = sections().get(hook)
    assert section is not None, f"hook {hook} has no '### `{hook}`' section in docs/plugins.md"
    spec = hooks()[hook]
    assert f"Added in {spec.goalhub_hook_version}." in section
    for argument in inspect.signature(spec).parameters:
        assert f"`{argument}`" in section, f"argument {argument} of hook {hook} is not documented"


def test_no_section_documents_something_that_does_not_exist() -> None:
    stale = set(sections()) - set(goalhub.__all__) - set(hooks())
    assert not stale, f"docs/plugins.md documents what goalhub no longer has: {sorted(stale)}"


def test_receiver_examples_name_the_event_first() -> None:
    """Every ``@goalhub.receiver(...)`` shown to an author starts with an event it knows."""
    texts = {
        "docs/plugins.md": REFERENCE.read_text(),
        "goalhub/__init__.py": goalhub.__doc__,
        "goalhub/hookspecs.py": hookspecs.__doc__ + hookspecs.receiver.__doc__,
        "README.md": (ROOT / "README.md").read_text(),
    }
    for where, text in texts.items():
        assert "receiver(*goal_classes)" not in text, where
        for arguments in re.findall(r"@goalhub\.receiver\(([^)]*)\)", text):
            event = arguments.split(",")[0].strip().strip("\"'")
            assert event in hookspecs.EVENT_HOOKS or event == "event", f"{where}: @goalhub.receiver({arguments})"


def test_the_testing_example_runs(db, inline_plugin, drain) -> None:
    """The reference's test example, with the receiver registered inline instead of installed."""

    class Cheers:
        @goalhub.receiver("goal.created", "CheerGoal")
        def bind_cheer_goal_to_session(self, goal_id, _cls, conditions):
            if _cls != "CheerGoal":
                return None
            session_id = conditions["session_id"]
            goalhub.get_database().sessions.update_one({"_id": ObjectId(session_id)}, {"$set": {"cheer_goal": goal_id}})
            return {"session_id": session_id}

    inline_plugin(Cheers(), "cheers")
    session_id = str(db.sessions.insert_one({"user": "u1", "active": True}).inserted_id)
    goal_id = "6818318c292549a5d91df267"
    goalhub.send_event("goal.created", goal_id=goal_id, active=True, _cls="CheerGoal",
                       conditions={"session_id": session_id}, context={"type": "cheer"},
                       levels=[{"target": 100}], nbf=None, exp=None)
    drain()
    outcome = db.outcomes.find_one({"goal_id": goal_id, "receiver": "bind_cheer_goal_to_session"})
    assert outcome["status"] == "ok"
    assert db.sessions.find_one({"_id": ObjectId(session_id)})["cheer_goal"] == goal_id


# --- goalhub.testing: the second public surface -------------------------------------------------


def _testing_section() -> str:
    text = REFERENCE.read_text()
    return text[text.index("## Testing a plugin"):]


def test_goalhub_testing_lists_every_public_name_it_defines() -> None:
    import goalhub.testing as testing

    defined = {name for name, value in vars(testing).items()
               if not name.startswith("_") and getattr(value, "__module__", None) == testing.__name__
               and (inspect.isfunction(value) or inspect.isclass(value))}
    fixtures = {name for name, value in vars(testing).items()
                if not name.startswith("_") and hasattr(value, "_fixture_function_marker")}
    assert defined | fixtures == set(testing.__all__)


@pytest.mark.parametrize("name", __import__("goalhub.testing", fromlist=["__all__"]).__all__)
def test_goalhub_testing_name_is_documented(name: str) -> None:
    assert f"`{name}" in _testing_section(), f"goalhub.testing.{name} is not in docs/plugins.md's 'Testing a plugin'"


# Phrases once written in the docs and docstrings that the code contradicts: they must not come back.
FALSE_PHRASES = {
    "each receiver runs as its own job": "receivers run inline in the job that sent the event unless isolated=True",
    "each runs as its own job": "receivers run inline in the job that sent the event unless isolated=True",
    "a receiver runs as its own job": "receivers run inline in the job that sent the event unless isolated=True",
    "one job per plugin receiver": "receivers run inline in the job that sent the event unless isolated=True",
    'pytest_plugins = ["goalhub.testing"]\n```': "the fixtures load through the pytest11 entry point",
}


def documentation_texts() -> dict[str, str]:
    """Every doc a plugin author or operator reads, and every docstring of goalhub and the scaffold."""
    import ast

    texts = {str(path.relative_to(ROOT)): path.read_text()
             for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
    for path in sorted((ROOT / "goalhub").rglob("*.py")):
        source = path.read_text()
        docstrings = [ast.get_docstring(node) or "" for node in ast.walk(ast.parse(source))
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
        # The scaffold writes docstrings into string constants: read its whole source.
        texts[str(path.relative_to(ROOT))] = source if path.name == "scaffold.py" else "\n".join(docstrings)
    return texts


def false_phrases_in(texts: dict[str, str]) -> list[str]:
    found = []
    for where, text in texts.items():
        flat = " ".join(text.lower().split())  # a phrase broken over lines is found too
        for phrase, truth in FALSE_PHRASES.items():
            if " ".join(phrase.lower().split()) in flat:
                found.append(f"{where}: '{phrase}' ({truth})")
    return found


def test_no_doc_or_docstring_says_what_the_code_contradicts() -> None:
    assert false_phrases_in(documentation_texts()) == []


def test_the_false_phrase_check_finds_one() -> None:
    texts = {"docs/x.md": "Rules:\n- Each receiver runs as its\n  own job: raise to fail.",
             "goalhub/x.py": "Fine: receivers run inline."}
    assert false_phrases_in(texts) == [
        "docs/x.md: 'each receiver runs as its own job' (receivers run inline in the job that sent the event "
        "unless isolated=True)"]



def test_the_readme_names_every_index_goalhub_creates():
    """README "Backup and restore" lists the indexes for a MongoDB user that may not create them."""
    from goalhub.store import INDEXES

    text = " ".join((ROOT / "README.md").read_text().split())
    for collection, indexes in INDEXES.items():
        names = ", ".join(f"`{key}`" + (" (sparse)" if options.get("sparse") else "") for key, options in indexes)
        assert f"`{collection}` on {names}" in text, collection
