"""The repository stands alone: a clone from GitHub has nothing beside it, so no code outside bench/ may name a
folder beside the checkout, and the data and fixtures the project names are in the repo."""
import re
from pathlib import Path

from conftest import DATA, FIXTURE, ROOT
from tasks import DATA_DIR, FILES

# the shared folder one level up, as a relative path or via .parent
BESIDE = re.compile(r"\.\.[/\\]" + "shared" + r"|parent\s*/\s*[\"']" + "shared")


def test_no_code_outside_bench_names_a_folder_beside_the_checkout():
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("bench", ".venv", "runs") or rel.name == Path(__file__).name:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BESIDE.search(line):
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert offenders == []


def test_data_and_fixtures_live_in_the_repo():
    assert DATA_DIR.resolve() == DATA.resolve() and DATA_DIR.is_relative_to(ROOT)
    for pattern, _ in FILES.values():
        for split in ("train", "test") if "{split}" in pattern else ("test",):
            assert (DATA_DIR / pattern.format(split=split)).stat().st_size > 0
    assert FIXTURE.is_relative_to(ROOT)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (FIXTURE / name).stat().st_size > 0
